"""The face's vocabulary: the 52 ARKit blendshapes, the 15 Oculus/OpenXR visemes, phoneme -> viseme tables for
both TTS alphabets, and each viseme's mouth pose as ARKit weights.

In: a phoneme name from the TTS deployment (an espeak mnemonic such as `aI`, or a piper IPA symbol)
and its kind from `TextToSpeech.phoneme_inventory`. Out: the viseme(s) it shows (a diphthong is two, sharing its
time), and for a viseme the ARKit weights of its mouth shape (`VISEME_POSES`).

These tables are the single source for every client: `python -m graphs.visemes --cpp` writes them as the C++
header AvatarLinkCore compiles (`unreal/.../AvatarLinkCore/Public/VisemeTables.generated.h`); a test keeps the
committed header equal to this module's output.
"""

from __future__ import annotations

import sys

# Apple ARKit's ARFaceAnchor.BlendShapeLocation, in the order LiveLink Face and MetaHuman's mh_arkit_mapping_pose
# use. FaceFrame.weights are index-aligned with it.
ARKIT_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight", "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel",
    "mouthPucker", "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight",
    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "browDownLeft",
    "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff", "cheekSquintLeft",
    "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)  # fmt: skip
ARKIT_INDEX = {name: index for index, name in enumerate(ARKIT_NAMES)}

# The Oculus/OpenXR viseme set, in VisemeId order (avatar.proto).
VISEMES: tuple[str, ...] = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou")
VISEME_INDEX = {name: index for index, name in enumerate(VISEMES)}


def both_sides(weight: float, *stems: str) -> dict[str, float]:
    """A symmetric pose: `mouthSmile` -> mouthSmileLeft and mouthSmileRight."""
    return {f"{stem}{side}": weight for stem in stems for side in ("Left", "Right")}


# Each viseme's mouth shape at full strength. Lips together for PP, lower lip to teeth for FF, the tongue between
# the teeth for TH; the jaw opens most for aa, then oh, E; rounding (pucker, funnel) for ou, oh, CH, RR.
VISEME_POSES: dict[str, dict[str, float]] = {
    "sil": {},
    "PP": {"mouthClose": 0.1, "mouthRollLower": 0.3, "mouthRollUpper": 0.2, **both_sides(0.5, "mouthPress")},
    "FF": {"jawOpen": 0.08, "mouthRollLower": 0.6, **both_sides(0.25, "mouthUpperUp")},
    "TH": {"jawOpen": 0.15, "tongueOut": 0.4, **both_sides(0.2, "mouthLowerDown")},
    "DD": {"jawOpen": 0.2, **both_sides(0.15, "mouthStretch"), **both_sides(0.15, "mouthLowerDown")},
    "kk": {"jawOpen": 0.25, **both_sides(0.2, "mouthStretch")},
    "CH": {"jawOpen": 0.15, "mouthFunnel": 0.5, "mouthPucker": 0.3, **both_sides(0.2, "mouthUpperUp")},
    "SS": {"jawOpen": 0.1, **both_sides(0.4, "mouthStretch"), **both_sides(0.15, "mouthSmile")},
    "nn": {"jawOpen": 0.15, **both_sides(0.1, "mouthStretch")},
    "RR": {"jawOpen": 0.15, "mouthFunnel": 0.3, "mouthPucker": 0.4},
    "aa": {"jawOpen": 0.7, **both_sides(0.3, "mouthLowerDown"), **both_sides(0.1, "mouthUpperUp")},
    "E": {"jawOpen": 0.45, **both_sides(0.3, "mouthStretch"), **both_sides(0.15, "mouthSmile")},
    "ih": {"jawOpen": 0.32, **both_sides(0.4, "mouthStretch"), **both_sides(0.25, "mouthSmile")},
    "oh": {"jawOpen": 0.5, "mouthFunnel": 0.6, "mouthPucker": 0.2},
    "ou": {"jawOpen": 0.25, "mouthPucker": 0.8, "mouthFunnel": 0.3},
}

# How strongly a viseme holds its shape against its neighbours (coarticulation, graphs/face.py): the lips must
# close for PP and touch the teeth for FF, so they win; the tongue-only consonants (DD, kk, nn) give way.
VISEME_DOMINANCE: dict[str, float] = {
    "sil": 0.9, "PP": 1.0, "FF": 0.9, "TH": 0.7, "DD": 0.45, "kk": 0.4, "CH": 0.8, "SS": 0.7, "nn": 0.4,
    "RR": 0.6, "aa": 0.7, "E": 0.6, "ih": 0.6, "oh": 0.7, "ou": 0.8,
}  # fmt: skip

# espeak-ng mnemonics (en voices) -> visemes; a diphthong shows two, sharing its duration.
ESPEAK_VISEMES: dict[str, tuple[str, ...]] = {
    **{p: ("PP",) for p in ("p", "b", "m", "m-")},
    **{p: ("FF",) for p in ("f", "v", "v#", "B")},
    **{p: ("TH",) for p in ("T", "D")},
    **{p: ("DD",) for p in ("t", "d", "t#", "d#", "t2", "t[", "d[", "*", "?")},
    **{p: ("kk",) for p in ("k", "g", "c", "J", "J^", "q", "x", "X", "#X1", "C", "h", "N", "N-", "Q", "Q^", 'Q"')},
    **{p: ("CH",) for p in ("tS", "dZ", "S", "Z", "tS;", "dZ;", "S;", "Z;")},
    **{p: ("SS",) for p in ("s", "z", "s;", "z;", "s.", "z.", "z#", "z/2")},
    **{p: ("nn",) for p in ("n", "n-", "n.", "n^", "l", "l-", "l/", "l/2", "l/3", "l^", "l.", "L", "L/", "l#")},
    **{p: ("RR",) for p in ("r", "r-", "r/", "R", "R2", "R3", "r.", "**", 'r"')},
    "w": ("ou",),
    "w#": ("ou",),
    "j": ("ih",),
    ";": ("ih",),
    **{p: ("aa",) for p in ("a", "aa", "a#", "a2", "a#2", "A:", "A@", "A#", "A~", "V", "VR")},
    **{p: ("E",) for p in ("@", "@-", "@2", "@5", "@L", "@#", "3", "3:", "E", "E#", "E2", "e", "e:", "e#", "e@")},
    **{p: ("ih",) for p in ("I", "I#", "I2", "I2#", "i", "i:", "i@", "i@3", "IR")},
    **{p: ("oh",) for p in ("0", "0#", "02", "O", "O:", "O2", "O@", "o", "o:", "o@", "O~")},
    **{p: ("ou",) for p in ("u", "u:", "U", "U@")},
    "aI": ("aa", "ih"),
    "aI@": ("aa", "ih"),
    "aI3": ("aa", "ih"),
    "aU": ("aa", "ou"),
    "aU@": ("aa", "ou"),
    "eI": ("E", "ih"),
    "oU": ("oh", "ou"),
    "oU#": ("oh", "ou"),
    "OI": ("oh", "ih"),
}

# IPA symbols (piper voices) -> visemes, by their first letter (piper's phonemes are one symbol plus modifiers).
IPA_VISEMES: dict[str, str] = {
    **dict.fromkeys("pbmɱ", "PP"),
    **dict.fromkeys("fvɸβ", "FF"),
    **dict.fromkeys("θð", "TH"),
    **dict.fromkeys("tdɾʈɖʔ", "DD"),  # noqa: RUF001
    **dict.fromkeys("kgɡŋcɟqɢxɣχhɦç", "kk"),  # noqa: RUF001 (IPA letters look like Latin ones)
    **dict.fromkeys("ʃʒ", "CH"),
    **dict.fromkeys("szɕʑʂʐ", "SS"),
    **dict.fromkeys("nlɫɲɳɭʎ", "nn"),
    **dict.fromkeys("ɹrʁɻʀ", "RR"),
    **dict.fromkeys("wʍ", "ou"),
    **dict.fromkeys("jiɪyʏɨ", "ih"),  # noqa: RUF001
    **dict.fromkeys("aɑæʌɐɶ", "aa"),  # noqa: RUF001
    **dict.fromkeys("eɛəɚɜɝɘœø", "E"),
    **dict.fromkeys("oɔɒɤɵ", "oh"),
    **dict.fromkeys("uʊɯʉ", "ou"),  # noqa: RUF001
}

# A phoneme neither table knows is shown by its kind (TextToSpeech.phoneme_inventory).
KIND_VISEMES: dict[str, str] = {
    "pause": "sil",
    "vowel": "E",
    "stop": "DD",
    "voiced stop": "DD",
    "fricative": "SS",
    "voiced fricative": "SS",
    "nasal": "nn",
    "liquid": "RR",
}


def is_pause(phoneme: str) -> bool:
    """espeak's `_`, `_:`, `||`, ... and piper's `_` (punctuation and sentence edges)."""
    return phoneme.startswith("_") or phoneme in ("||", "1", "")


def phoneme_visemes(phoneme: str, kind: str = "") -> tuple[str, ...]:
    """The viseme(s) a phoneme shows: its table entry (espeak, then IPA by first letter), else by its kind."""
    if is_pause(phoneme):
        return ("sil",)
    if phoneme in ESPEAK_VISEMES:
        return ESPEAK_VISEMES[phoneme]
    if phoneme[0] in IPA_VISEMES:
        if phoneme[:2] in ("tʃ", "dʒ"):
            return ("CH",)
        return (IPA_VISEMES[phoneme[0]],)
    return (KIND_VISEMES.get(kind, "sil" if not kind else "E"),)


def pose_vector(pose: dict[str, float]) -> list[float]:
    """A {blendshape: weight} pose as 52 weights in ARKIT_NAMES order."""
    weights = [0.0] * len(ARKIT_NAMES)
    for name, weight in pose.items():
        weights[ARKIT_INDEX[name]] = weight
    return weights


def _cpp_float(value: float) -> str:
    """A C++ float literal: 0.5f, and 0.0f / 1.0f (C++ has no `0f`)."""
    text = f"{value:g}"
    return f"{text}f" if any(c in text for c in ".e") else f"{text}.0f"


def cpp_header() -> str:
    """The tables as a C++17 header for AvatarLinkCore (no UE includes)."""
    lines = [
        "// Generated by `python -m graphs.visemes --cpp` from graphs/visemes.py. Do not edit: a test compares it.",
        "#pragma once",
        "",
        "#include <array>",
        "",
        "namespace avatarlink {",
        "",
        f"inline constexpr int kNumBlendshapes = {len(ARKIT_NAMES)};",
        f"inline constexpr int kNumVisemes = {len(VISEMES)};",
        "",
        "// ARKit blendshape names in FaceFrame.weights order.",
        "inline constexpr std::array<const char*, kNumBlendshapes> kArkitNames = {",
        *[f'    "{name}",' for name in ARKIT_NAMES],
        "};",
        "",
        "// Oculus/OpenXR viseme names in VisemeId order.",
        "inline constexpr std::array<const char*, kNumVisemes> kVisemeNames = {",
        *[f'    "{name}",' for name in VISEMES],
        "};",
        "",
        "// Each viseme's mouth pose as ARKit weights, [viseme][blendshape].",
        "inline constexpr std::array<std::array<float, kNumBlendshapes>, kNumVisemes> kVisemePoses = {{",
    ]
    for viseme in VISEMES:
        values = ", ".join(_cpp_float(w) for w in pose_vector(VISEME_POSES[viseme]))
        lines.append(f"    {{{{{values}}}}},  // {viseme}")
    lines += [
        "}};",
        "",
        "// How strongly each viseme holds its shape against its neighbours (coarticulation).",
        "inline constexpr std::array<float, kNumVisemes> kVisemeDominance = {",
        "    " + ", ".join(_cpp_float(VISEME_DOMINANCE[v]) for v in VISEMES) + ",",
        "};",
        "",
        "}  // namespace avatarlink",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] != ["--cpp"]:
        sys.exit("usage: python -m graphs.visemes --cpp > VisemeTables.generated.h")
    sys.stdout.write(cpp_header())
