"""The avatar's vocabulary and direction: every phoneme the TTS can say has a viseme, and the director's commands
follow the topic, the user's voice and the answer's sentences."""

from __future__ import annotations

import pytest

from almquist.config.avatar import AvatarConfig
from deployments.espeak import Espeak
from graphs.avatar_direction import Director, sentence_gesture, sentence_mood
from graphs.visemes import ARKIT_NAMES, ESPEAK_VISEMES, VISEME_POSES, VISEMES, is_pause, phoneme_visemes


def test_every_english_espeak_phoneme_has_a_viseme():
    inventory = Espeak.instance().phoneme_inventory("en-us")
    assert [p for p in inventory if not is_pause(p) and p not in ESPEAK_VISEMES] == []
    assert phoneme_visemes("aI") == ("aa", "ih") and phoneme_visemes("_:") == ("sil",)


@pytest.mark.parametrize(("ipa", "viseme"), [("p", "PP"), ("ð", "TH"), ("tʃ", "CH"), ("ɹ", "RR"), ("ɑː", "aa")])  # noqa: RUF001
def test_piper_ipa_phonemes_map_by_their_letter(ipa, viseme):
    assert phoneme_visemes(ipa) == (viseme,)


def test_viseme_poses_name_real_blendshapes_and_open_the_jaw_for_open_vowels():
    assert set(VISEME_POSES) == set(VISEMES) and len(VISEMES) == 15 and len(ARKIT_NAMES) == 52
    assert all(name in ARKIT_NAMES for pose in VISEME_POSES.values() for name in pose)
    assert VISEME_POSES["aa"]["jawOpen"] > VISEME_POSES["E"]["jawOpen"] > VISEME_POSES["PP"].get("jawOpen", 0)


def test_the_first_turn_sets_the_scene_of_its_topic_wide_then_medium():
    director = Director(AvatarConfig())
    opening = director.turn_start("movies")
    assert opening.environment == ("movie_theater", "topic: movies")
    assert opening.camera is not None and opening.camera[0] == "wide"
    assert opening.emotion == ("neutral", 0.0, 0.4)  # the stream learns the starting emotion
    assert director.sentence("Inception came out in 2010.").camera is None  # the new scene holds a sentence
    assert director.sentence("It was directed by Christopher Nolan.").camera[0] == "medium"
    same_topic = director.turn_start("movies")
    assert same_topic.environment is None and same_topic.emotion is None


def test_an_emotional_moment_gets_a_close_up_and_the_voice_follows():
    director = Director(AvatarConfig())
    director.turn_start("music", user_emotion="sad")
    strong = director.sentence("I love it, it is a wonderful, beautiful masterpiece!")
    assert strong.emotion is not None and strong.emotion[0] == "excitement" and strong.emotion[1] >= 0.6
    assert strong.camera is not None and strong.camera[:2] == ("close_up", "emotional moment: excitement")
    assert strong.speech_emotion == "happy"
    calm = director.sentence("The album has ten songs.")
    assert calm.camera is not None and calm.camera[0] == "medium" and calm.emotion == ("neutral", 0.0, 0.8)


def test_the_users_voice_sets_an_empathic_start():
    assert Director(AvatarConfig()).turn_start("general", user_emotion="sad").emotion == ("sadness", 0.4, 0.4)


@pytest.mark.parametrize(
    ("sentence", "gesture"),
    [
        ("Hello there!", "wave"),
        ("I'm not sure about that one.", "shrug"),
        ("Yes, exactly.", "nod"),
        ("Here is the trailer.", "point"),
        ("It is the best, a brilliant classic!", "thumbs_up"),
        ("The film runs two hours.", ""),
    ],
)
def test_gestures_follow_cue_words(sentence, gesture):
    assert sentence_gesture(sentence, first=False) == gesture


def test_moods_grow_with_cues_and_exclamation():
    assert sentence_mood("The film runs two hours.").kind == "neutral"
    sad = sentence_mood("Unfortunately he died last year.")
    assert sad.kind == "sadness"
    assert sentence_mood("Unfortunately he died, a tragic loss!").intensity > sad.intensity
