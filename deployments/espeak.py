"""ctypes binding of libespeak-ng (Debian `libespeak-ng1`, GPL-3.0-or-later): PCM16 speech plus phoneme events.

In: UTF-8 text, an espeak voice name and the prosody parameters (rate in words per minute, pitch, pitch range,
volume). Out: `Synthesis` with the int16 samples at `Espeak.sample_rate` (22050 Hz) and one `(mnemonic, start_ms)`
per phoneme, from `espeakEVENT_PHONEME` events (`id.string` holds the mnemonic, `audio_position` the start in ms
from the start of that `espeak_Synth` call).

libespeak-ng keeps all its state in globals: the library is initialised once per process (`Espeak.instance()`) in
`AUDIO_OUTPUT_SYNCHRONOUS` mode, so `espeak_Synth` returns only when every sample has gone through the callback on
the calling thread, and every call that touches that state holds `Espeak._lock`.

Phoneme names are espeak's ASCII mnemonics (Kirshenbaum-like, see espeak-ng's docs/phonemes.md), e.g. for en-us:
vowels `@ 3: a A: A@ aI aU E e@ eI i i: I i@ O: OI oU U u: V 0 @L`, consonants `p b t d k g tS dZ f v T D s z S Z h
m n N l r j w`, the flap `*`, and pauses `_` (short), `_:` (sentence end), `_!` / `_|` / `||`.
`phoneme_inventory()` lists the names (and their kind) of a voice's phoneme table, read from espeak-ng's compiled
`phontab` file, which is what the avatar maps to visemes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000  # report a missing data folder as an error instead of exit()ing the replica
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000  # keep the sentence pause after the last sentence, as between sentences
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_EE_OK = 0
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_BUFFER_MS = 200  # how much audio one callback carries; only the callback granularity in synchronous mode

MIN_RATE_WPM, MAX_RATE_WPM = 80, 450  # what espeakRATE accepts

# phontab phoneme types (phoneme.h) -> the kind reported by phoneme_inventory(); stress marks and virtual phonemes
# never produce phoneme events, so they are left out.
_KINDS = {
    0: "pause",
    2: "vowel",
    3: "liquid",
    4: "stop",
    5: "voiced stop",
    6: "fricative",
    7: "voiced fricative",
    8: "nasal",
}


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class EspeakError(RuntimeError):
    """libespeak-ng is missing or refused a call."""


@dataclass
class Synthesis:
    """One `espeak_Synth` call: int16 samples and each phoneme's mnemonic with its start in ms."""

    samples: np.ndarray
    phonemes: list[tuple[str, int]]


class Espeak:
    """The process's one libespeak-ng instance; use `Espeak.instance()`."""

    _instance: Espeak | None = None
    _instance_lock = threading.Lock()

    @classmethod
    def instance(cls) -> Espeak:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __init__(self) -> None:
        found = ctypes.util.find_library("espeak-ng")
        if found is None:
            raise EspeakError("libespeak-ng is not installed (Debian: apt-get install libespeak-ng1)")
        lib = ctypes.CDLL(found)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_GetCurrentVoice.argtypes = []
        lib.espeak_GetCurrentVoice.restype = ctypes.POINTER(_Voice)
        self._lib = lib
        self._lock = threading.Lock()
        self._pcm: list[bytes] = []
        self._events: list[tuple[str, int]] = []
        self._voice: str | None = None
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, None, _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}): is espeak-ng-data installed?")
        self.sample_rate: int = rate
        data_path = ctypes.c_char_p()
        self.version: str = lib.espeak_Info(ctypes.byref(data_path)).decode()
        self.data_path = Path(data_path.value.decode()) if data_path.value else None
        self._callback = _Callback(self._on_synth)  # kept on the instance: libespeak-ng holds only the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav: ctypes._Pointer, count: int, events: ctypes._Pointer) -> int:
        if count > 0:
            self._pcm.append(ctypes.string_at(wav, count * 2))
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                name = bytes(event.id.string).split(b"\0", 1)[0].decode("ascii", "replace")
                self._events.append((name, event.audio_position))
            i += 1
        return 0  # 0 = go on

    def _set_voice(self, voice: str) -> None:
        if voice == self._voice:
            return  # loading a voice re-reads its dictionary: skip it when nothing changes
        self._voice = None
        status = self._lib.espeak_SetVoiceByName(voice.encode())
        if status != _EE_OK:
            raise EspeakError(f"espeak-ng has no voice {voice!r} (espeak_SetVoiceByName returned {status})")
        self._voice = voice

    def has_voice(self, voice: str) -> bool:
        with self._lock:
            try:
                self._set_voice(voice)
            except EspeakError:
                return False
            return True

    def synthesize(self, text: str, voice: str, rate_wpm: int, pitch: int, pitch_range: int, volume: int) -> Synthesis:
        """Speech of `text`; pitch and range 0-100 (50 is the voice's own), volume 0-200 (100 is normal)."""
        data = text.replace("\0", " ").encode("utf-8") + b"\0"
        with self._lock:
            self._set_voice(voice)
            for parameter, value in (
                (_PARAM_RATE, min(MAX_RATE_WPM, max(MIN_RATE_WPM, rate_wpm))),
                (_PARAM_PITCH, pitch),
                (_PARAM_RANGE, pitch_range),
                (_PARAM_VOLUME, volume),
            ):
                self._lib.espeak_SetParameter(parameter, int(value), 0)
            self._pcm, self._events = [], []
            try:
                status = self._lib.espeak_Synth(
                    data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
                )
                if status != _EE_OK:
                    raise EspeakError(f"espeak_Synth failed with status {status}")
                samples = np.frombuffer(b"".join(self._pcm), dtype="<i2").copy()
                return Synthesis(samples, self._events)
            finally:
                self._pcm, self._events = [], []

    def phoneme_table(self, voice: str) -> str:
        """The name of the phoneme table `voice` speaks with (its voice file's `phonemes` line)."""
        with self._lock:
            self._set_voice(voice)
            current = self._lib.espeak_GetCurrentVoice()
            identifier = current.contents.identifier.decode() if current and current.contents.identifier else ""
            languages = current.contents.languages if current else None
        language = languages[1:].decode() if languages else voice  # first byte is the priority
        if self.data_path is not None and identifier:
            for folder in ("lang", "voices"):
                file = self.data_path / folder / identifier
                if file.is_file():
                    for line in file.read_text(errors="replace").splitlines():
                        words = line.split()
                        if len(words) >= 2 and words[0] == "phonemes":
                            return words[1]
        return language

    def phoneme_inventory(self, voice: str) -> dict[str, str]:
        """Every phoneme mnemonic `voice` can emit, mapped to its kind (vowel, stop, nasal, pause, ...)."""
        if self.data_path is None:
            raise EspeakError("espeak-ng did not report its data folder")
        return read_phontab(self.data_path / "phontab", self.phoneme_table(voice))


def read_phontab(path: str | os.PathLike[str], table: str) -> dict[str, str]:
    """The phonemes of `table` in a compiled espeak-ng `phontab`, with those it inherits from its base tables.

    Layout (synthdata.c `LoadPhData`): int32 table count; per table 1 byte phoneme count, 1 byte `includes` (the
    1-based index of its base table, 0 for none), 2 bytes padding, a 32-byte name, then 16-byte PHONEME_TABs
    (uint32 mnemonic of up to 4 chars, uint32 flags, uint16 program, uint8 code, uint8 type, 4 more bytes).
    A table replaces its base's phoneme of the same code.
    """
    data = Path(path).read_bytes()
    tables: list[tuple[str, int, list[tuple[int, str, int]]]] = []
    position = 4
    for _ in range(data[0]):
        count, includes = data[position], data[position + 1]
        name = data[position + 4 : position + 36].split(b"\0", 1)[0].decode("ascii", "replace")
        position += 36
        phonemes = []
        for _ in range(count):
            mnemonic, _flags, _program, code, kind = struct.unpack_from("<IIHBB", data, position)
            position += 16
            phonemes.append((code, mnemonic.to_bytes(4, "little").rstrip(b"\0").decode("latin-1"), kind))
        tables.append((name, includes, phonemes))
    index = next((i for i, entry in enumerate(tables) if entry[0] == table), None)
    if index is None:
        raise EspeakError(f"phoneme table {table!r} is not in {path}")
    chain = []
    while index is not None and index not in chain:
        chain.append(index)
        includes = tables[index][1]
        index = includes - 1 if includes > 0 else None
    by_code: dict[int, tuple[str, int]] = {}
    for i in reversed(chain):  # base first, so each table overrides what it inherits
        for code, mnemonic, kind in tables[i][2]:
            if mnemonic:
                by_code[code] = (mnemonic, kind)
    return {
        mnemonic: _KINDS[kind]
        for mnemonic, kind in by_code.values()
        if kind in _KINDS and mnemonic.isprintable() and mnemonic.isascii()
    }
