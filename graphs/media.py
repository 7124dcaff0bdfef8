"""The `almquist.v1.Media` gRPC service: direct access to each model family, for tools, notebooks and the CLI.

In: Media requests (EmbedRequest, DetectRequest, ...). Out: their responses, built from the deployments' plain
results. Depends on the model families' handles (graphs/handles.py) and the speech and audio limits; served by the
single gRPC ingress (graphs/ingress.py). A family this profile does not deploy answers UNIMPLEMENTED naming the
config key that turns it on; a deployment's AlmquistError becomes the RPC's status.

Audio arrives as `AudioChunk`s (PCM16, any accepted rate and channel count) or, for Separate, as an encoded file;
it is decoded here (almquist.audio) and the models receive float32 samples at the rate they want.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from ray.serve.handle import DeploymentHandle

from almquist.audio import encode_wav, pcm16_to_float, speech_input, to_mono
from almquist.config import AudioConfig, AudioLimits, SpeechConfig
from almquist.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted, Unimplemented, public_error
from almquist.v1 import common_pb2, media_pb2
from deployments.llm.engine import ChatMessage, GenerationRequest
from graphs.handles import Handles, streaming
from graphs.rpc import abort, aborting, streamed
from graphs.speech import ChunkDecoder, SpeechTurn

LYRICS_PROMPT = (
    "You write song lyrics. Write two short verses and a chorus for the song described by the user. "
    "Only the lyrics, no titles or notes."
)

_MODES = {
    media_pb2.IMAGE_GEN_MODE_UNSPECIFIED: "",
    media_pb2.IMAGE_GEN_MODE_TEXT_TO_IMAGE: "text_to_image",
    media_pb2.IMAGE_GEN_MODE_IMAGE_TO_IMAGE: "image_to_image",
    media_pb2.IMAGE_GEN_MODE_INSTRUCT_EDIT: "instruct_edit",
    media_pb2.IMAGE_GEN_MODE_UPSCALE: "upscale",
}


def _image(frame: common_pb2.ImageFrame) -> tuple[bytes, str]:
    return frame.data, frame.mime_type


def _box(box: Any) -> media_pb2.Box:
    x0, y0, x1, y1 = (float(v) for v in box)
    return media_pb2.Box(x_min=x0, y_min=y0, x_max=x1, y_max=y1)


def _box_tuple(box: media_pb2.Box) -> tuple[float, float, float, float]:
    return (box.x_min, box.y_min, box.x_max, box.y_max)


async def _next_within(messages: AsyncIterator[Any], idle_timeout_s: float) -> Any:
    """A client stream's next message; DeadlineExceeded when none comes within `idle_timeout_s` (an abandoned stream
    must not hold a replica until its deadline), StopAsyncIteration at its end."""
    try:
        return await asyncio.wait_for(anext(messages), idle_timeout_s)
    except TimeoutError:
        raise DeadlineExceeded(f"no audio for {idle_timeout_s:g} s; the stream was closed") from None


class MediaService:
    """gRPC methods of `almquist.v1.Media`: each model family's handle, and the speech and audio limits that
    request audio is checked against (Transcribe also takes its partial interval from speech.stt)."""

    def __init__(self, handles: Handles, speech: SpeechConfig, audio: AudioConfig) -> None:
        self._media = handles
        self._speech = speech
        self._audio_config = audio
        self._embedding_model: str | None = None

    def _handle(self, grpc_context: Any, family: str, config_key: str) -> DeploymentHandle:
        handle = getattr(self._media, family)
        if handle is None:
            abort(grpc_context, Unimplemented(f"{family} is not deployed here: configure {config_key} in the profile"))
        return handle

    async def Embed(self, request: media_pb2.EmbedRequest, grpc_context: Any = None) -> media_pb2.EmbedResponse:
        handle = self._handle(grpc_context, "embeddings", "embeddings")
        with aborting(grpc_context):
            vectors = np.asarray(await handle.embed.remote(list(request.texts), request.normalize))
        if self._embedding_model is None:  # asked once: a replica serves one model for its life
            self._embedding_model = str((await handle.info.remote())["model"])
        return media_pb2.EmbedResponse(
            embeddings=[media_pb2.Embedding(values=row.tolist()) for row in vectors],
            model=self._embedding_model,
            dimensions=int(vectors.shape[1]),
        )

    async def Detect(self, request: media_pb2.DetectRequest, grpc_context: Any = None) -> media_pb2.DetectResponse:
        handle = self._handle(grpc_context, "detection", "vision.detection")
        with aborting(grpc_context):
            found = await handle.detect.remote(*_image(request.image), list(request.queries), request.score_threshold)
        return media_pb2.DetectResponse(
            detections=[media_pb2.Detection(label=d.label, score=d.score, box=_box(d.box)) for d in found]
        )

    async def EstimateDepth(self, request: media_pb2.DepthRequest, grpc_context: Any = None) -> media_pb2.DepthResponse:
        handle = self._handle(grpc_context, "depth", "vision.depth")
        boxes = [_box_tuple(box) for box in request.boxes]
        with aborting(grpc_context):
            result = await handle.estimate.remote(*_image(request.image), boxes)
        return media_pb2.DepthResponse(
            depth_f16=np.asarray(result.depth, dtype="<f2").tobytes(),
            width=result.width,
            height=result.height,
            box_median_depth=list(result.box_median_depth),
        )

    async def Segment(self, request: media_pb2.SegmentRequest, grpc_context: Any = None) -> media_pb2.SegmentResponse:
        from deployments.segmentation import mask_png

        handle = self._handle(grpc_context, "segmentation", "vision.segmentation")
        points = [(p.x, p.y, p.foreground) for p in request.points]
        boxes = [_box_tuple(box) for box in request.boxes]
        with aborting(grpc_context):
            masks = await handle.segment.remote(*_image(request.image), points, boxes)
        return media_pb2.SegmentResponse(
            masks=[
                media_pb2.Mask(png=mask_png(m.mask), score=m.score, box=_box(m.box), area=int(m.area)) for m in masks
            ]
        )

    async def RecognizeGestures(
        self, request: media_pb2.GesturesRequest, grpc_context: Any = None
    ) -> media_pb2.GesturesResponse:
        handle = self._handle(grpc_context, "gestures", "vision.gestures")
        with aborting(grpc_context):
            hands = await handle.recognize.remote(*_image(request.image))
        return media_pb2.GesturesResponse(
            hands=[
                media_pb2.HandGesture(
                    gesture=h.gesture,
                    score=h.score,
                    handedness=h.handedness,
                    landmarks=[media_pb2.Landmark(x=x, y=y, z=z) for x, y, z in np.asarray(h.landmarks).tolist()],
                )
                for h in hands
            ]
        )

    async def DetectSceneChanges(
        self, request: media_pb2.SceneChangesRequest, grpc_context: Any = None
    ) -> media_pb2.SceneChangesResponse:
        handle = self._handle(grpc_context, "scene_changes", "vision.scene_changes")
        frames = [(f.data, f.mime_type, f.timestamp_s) for f in request.frames]
        with aborting(grpc_context):
            cuts = await handle.detect.remote(frames, request.threshold)
        return media_pb2.SceneChangesResponse(
            cuts=[
                media_pb2.SceneCut(frame_index=c.frame_index, timestamp_s=c.timestamp_s, score=c.score) for c in cuts
            ],
            frames=len(frames),
        )

    async def GenerateImage(
        self, request: media_pb2.GenerateImageRequest, grpc_context: Any = None
    ) -> AsyncIterator[media_pb2.MediaProgress]:
        from deployments.image_gen import ImageOutput, ImageProgress

        handle = self._handle(grpc_context, "image_gen", "vision.image_gen")
        if request.mode not in _MODES:
            abort(grpc_context, InvalidArgument(f"unknown mode {request.mode}; use one of ImageGenMode's values"))
        stream = handle.options(stream=True).generate.remote(
            request.prompt,
            negative_prompt=request.negative_prompt,
            steps=request.steps,
            seed=request.seed,
            width=request.width,
            height=request.height,
            mode=_MODES[request.mode],
            init_image=_image(request.init_image) if request.HasField("init_image") else None,
            strength=request.strength,
            guidance_scale=request.guidance_scale,
            control_image=_image(request.control_image) if request.HasField("control_image") else None,
            loras=tuple(request.loras),
        )
        total = 0
        async for item in streamed(grpc_context, streaming(stream)):
            if isinstance(item, ImageProgress):
                total = item.total_steps
                yield media_pb2.MediaProgress(step=item.step, total_steps=item.total_steps)
            elif isinstance(item, ImageOutput):
                yield media_pb2.MediaProgress(
                    step=total or item.steps,
                    total_steps=total or item.steps,
                    result=media_pb2.MediaResult(
                        kind="image",
                        mime_type="image/png",
                        data=item.png,
                        description=request.prompt,
                        metadata={
                            "seed": str(item.seed),
                            "steps": str(item.steps),
                            "size": f"{item.width}x{item.height}",
                            "mode": item.mode,
                            "model": item.model,
                        },
                    ),
                )

    # ----- speech and audio -----

    def _speech_audio(self, grpc_context: Any, chunk: common_pb2.AudioChunk, limits: AudioLimits) -> np.ndarray:
        """Mono 16 kHz float32, what the speech models take."""
        with aborting(grpc_context):
            return speech_input(chunk.pcm16, chunk.sample_rate_hz, chunk.channels, limits)

    @staticmethod
    def _samples(grpc_context: Any, chunk: common_pb2.AudioChunk, limits: AudioLimits) -> np.ndarray:
        """float32 at the chunk's own rate, `(channels, samples)` when it has several (the model resamples)."""
        with aborting(grpc_context):
            return pcm16_to_float(chunk.pcm16, chunk.sample_rate_hz, chunk.channels, limits)

    async def Transcribe(self, request_stream: Any, grpc_context: Any = None) -> AsyncIterator[media_pb2.Transcript]:
        stt = self._handle(grpc_context, "stt", "speech.stt")
        config = self._speech.stt
        assert config is not None  # deployed only with its config
        messages = aiter(request_stream)
        try:
            first = await _next_within(messages, config.idle_timeout_s)
        except StopAsyncIteration:
            abort(grpc_context, InvalidArgument("no TranscribeRequest was sent: the first one carries the settings"))
        except DeadlineExceeded as idle:
            abort(grpc_context, idle)
        diarization = self._handle(grpc_context, "diarization", "speech.diarization") if first.diarize else None
        partials: asyncio.Queue[media_pb2.Transcript | None] = asyncio.Queue()
        turn = SpeechTurn(
            stt,
            config.partial_interval_s,
            partials.put_nowait,
            first.language,
            first.word_timestamps,
            diarization,
            self._media.voice_emotion,
        )
        decoder = ChunkDecoder(config.audio)

        async def read() -> None:
            try:
                if first.audio.pcm16:  # the first request may carry audio as well as the settings
                    turn.push(decoder.decode(first.audio))
                while True:
                    try:
                        request = await _next_within(messages, config.idle_timeout_s)
                    except StopAsyncIteration:
                        break
                    turn.push(decoder.decode(request.audio))
                    if turn.seconds > config.audio.max_seconds:
                        raise ResourceExhausted(
                            f"the audio is longer than the limit of {config.audio.max_seconds:g} s: "
                            "send it in shorter pieces"
                        )
            finally:
                partials.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (partial := await partials.get()) is not None:
                yield partial
            await reader
        except Exception as error:  # the audio's own errors, or a failed partial: a code and a plain message
            abort(grpc_context, public_error(error, "the transcription"))
        finally:
            reader.cancel()
        if getattr(request_stream, "is_cancelled", lambda: False)():
            return  # the client went away: no final transcript that nobody would read
        if turn.seconds == 0:
            abort(grpc_context, InvalidArgument("no audio was sent: send PCM16 in TranscribeRequest.audio"))
        try:
            heard = await turn.finish()
        except Exception as error:
            abort(grpc_context, public_error(error, "the transcription"))
        yield heard.transcript()

    async def Synthesize(
        self, request: media_pb2.SynthesizeRequest, grpc_context: Any = None
    ) -> AsyncIterator[media_pb2.SynthesizeChunk]:
        tts = self._handle(grpc_context, "tts", "speech.tts")
        stream = tts.options(stream=True).synthesize.remote(request.text, request.voice, request.rate, request.emotion)
        sequence = 0
        async for chunk in streamed(grpc_context, streaming(stream)):
            yield media_pb2.SynthesizeChunk(
                audio=common_pb2.AudioChunk(
                    pcm16=chunk.pcm16,
                    sample_rate_hz=chunk.sample_rate_hz,
                    channels=1,
                    start_s=chunk.start_s,
                    sequence=sequence,
                ),
                phonemes=[
                    media_pb2.PhonemeTiming(phoneme=p.phoneme, start_s=p.start_s, duration_s=p.duration_s)
                    for p in chunk.phonemes
                ],
            )
            sequence += 1

    async def DetectSpeech(
        self, request: media_pb2.DetectSpeechRequest, grpc_context: Any = None
    ) -> media_pb2.DetectSpeechResponse:
        vad = self._handle(grpc_context, "vad", "speech.vad")
        audio = self._speech_audio(grpc_context, request.audio, self._speech.vad.audio)  # type: ignore[union-attr]
        with aborting(grpc_context):
            spans = await vad.speech_segments.remote(audio, 16000)
        return media_pb2.DetectSpeechResponse(
            speech=[media_pb2.TimeSpan(start_s=start, end_s=end) for start, end in spans]
        )

    async def Diarize(self, request: media_pb2.DiarizeRequest, grpc_context: Any = None) -> media_pb2.DiarizeResponse:
        diarization = self._handle(grpc_context, "diarization", "speech.diarization")
        audio = self._speech_audio(grpc_context, request.audio, self._speech.diarization.audio)  # type: ignore[union-attr]
        with aborting(grpc_context):
            segments = await diarization.diarize.remote(audio, request.num_speakers)
        return media_pb2.DiarizeResponse(
            turns=[media_pb2.SpeakerTurn(start_s=s.start_s, end_s=s.end_s, speaker=s.speaker) for s in segments],
            speakers=len({s.speaker for s in segments}),
        )

    async def RecognizeVoiceEmotion(
        self, request: media_pb2.VoiceEmotionRequest, grpc_context: Any = None
    ) -> media_pb2.VoiceEmotionResponse:
        classifier = self._handle(grpc_context, "voice_emotion", "speech.voice_emotion")
        limits = self._speech.voice_emotion.audio  # type: ignore[union-attr]
        audio = self._speech_audio(grpc_context, request.audio, limits)
        with aborting(grpc_context):
            result = await classifier.classify.remote(audio)
        return media_pb2.VoiceEmotionResponse(emotion=result.label, score=result.score, scores=result.scores)

    async def AnalyzeMusic(
        self, request: media_pb2.AnalyzeMusicRequest, grpc_context: Any = None
    ) -> media_pb2.AnalyzeMusicResponse:
        analysis = self._handle(grpc_context, "music_analysis", "audio.music_analysis")
        chunk = request.audio
        audio = to_mono(self._samples(grpc_context, chunk, self._audio_config.music_analysis.audio))  # type: ignore[union-attr]
        with aborting(grpc_context):
            result = await analysis.analyze.remote(audio, chunk.sample_rate_hz, request.notes)
        return media_pb2.AnalyzeMusicResponse(
            duration_s=result.duration_s,
            tempo_bpm=result.tempo_bpm,
            beats_s=list(result.beats_s),
            key=result.key,
            chroma=list(result.chroma),
            chords=[media_pb2.Chord(start_s=c.start_s, end_s=c.end_s, chord=c.chord) for c in result.chords],
            notes=[
                media_pb2.Note(start_s=n.start_s, end_s=n.end_s, pitch_midi=n.pitch_midi, velocity=n.velocity)
                for n in result.notes
            ],
        )

    async def Separate(
        self, request: media_pb2.SeparateRequest, grpc_context: Any = None
    ) -> AsyncIterator[media_pb2.MediaResult]:
        separation = self._handle(grpc_context, "separation", "audio.separation")
        has_audio = bool(request.audio.pcm16) or bool(request.audio.sample_rate_hz)
        if has_audio == bool(request.file):
            abort(grpc_context, InvalidArgument("send the mix in exactly one of SeparateRequest.audio and .file"))
        if request.file:
            stream = separation.options(stream=True).separate_file.remote(request.file)
        else:
            chunk = request.audio
            mix = self._samples(grpc_context, chunk, self._audio_config.separation.audio)  # type: ignore[union-attr]
            stream = separation.options(stream=True).separate.remote(mix, chunk.sample_rate_hz)
        async for stem in streamed(grpc_context, streaming(stream)):
            yield media_pb2.MediaResult(
                kind=f"stem:{stem.stem}",
                mime_type="audio/wav",
                data=encode_wav(stem.audio, stem.sample_rate_hz),
                description=f"{stem.stem}, chunk {stem.index + 1} of {stem.total}",
                metadata={"chunk": str(stem.index), "chunks": str(stem.total), "start_s": f"{stem.start_s:.6f}"},
            )

    async def GenerateMusic(
        self, request: media_pb2.GenerateMusicRequest, grpc_context: Any = None
    ) -> AsyncIterator[media_pb2.MediaProgress]:
        from deployments.music_gen import MusicOutput, MusicProgress

        music_gen = self._handle(grpc_context, "music_gen", "audio.music_gen")
        melody, melody_rate = None, 0
        if request.HasField("melody"):
            chunk = request.melody
            melody = to_mono(self._samples(grpc_context, chunk, self._audio_config.music_gen.melody))  # type: ignore[union-attr]
            melody_rate = chunk.sample_rate_hz
        lyrics_task = None
        if request.lyrics:
            if self._media.llm is None:
                abort(grpc_context, Unimplemented("lyrics need the LLM deployment, and this application has none"))
            if not request.prompt.strip():
                abort(grpc_context, InvalidArgument("the prompt is empty: describe the music (and its lyrics)"))
            lyrics_task = asyncio.create_task(self._lyrics(request.prompt))
        stream = music_gen.options(stream=True).generate.remote(
            request.prompt, request.duration_s, melody, melody_rate, request.seed
        )
        try:
            async for item in streamed(grpc_context, streaming(stream)):
                if isinstance(item, MusicProgress):
                    yield media_pb2.MediaProgress(step=item.step, total_steps=item.total_steps)
                elif isinstance(item, MusicOutput):
                    metadata = {
                        "seed": str(item.seed),
                        "duration_s": f"{item.duration_s:.3f}",
                        "sample_rate_hz": str(item.sample_rate_hz),
                        "model": item.model,
                    }
                    if lyrics_task is not None:
                        with aborting(grpc_context, "writing the lyrics"):
                            metadata["lyrics"] = await lyrics_task
                    yield media_pb2.MediaProgress(
                        step=1,
                        total_steps=1,
                        result=media_pb2.MediaResult(
                            kind="music",
                            mime_type="audio/wav",
                            data=item.wav,
                            description=request.prompt,
                            metadata=metadata,
                        ),
                    )
        finally:
            if lyrics_task is not None and not lyrics_task.done():
                lyrics_task.cancel()

    async def _lyrics(self, prompt: str) -> str:
        request = GenerationRequest(
            messages=(ChatMessage("system", LYRICS_PROMPT), ChatMessage("user", prompt)), max_tokens=160
        )
        text = ""
        async for chunk in self._media.llm.options(stream=True).generate.remote(request):  # type: ignore[union-attr]
            text += chunk.text
        return text.strip()
