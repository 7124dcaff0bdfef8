"""One Serve deployment per model family. Each module holds its Engine protocol, its real engines and its
deployment class. Nothing here imports `graphs/` or `actors/`: a model holds no session state."""
