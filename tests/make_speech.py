"""Regenerate edgekit/data/speech: espeak-ng (Debian package) speaks each text, resampled to 16 kHz 16-bit mono,
and transcripts.jsonl lists each clip with its text.

    python tests/make_speech.py edgekit/data/speech
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import wave
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

TEXTS = ["turn on the light", "what time is it", "stop the music", "open the door", "play the next song",
         "set a timer for ten minutes", "how is the weather today", "call my mother", "turn off the radio",
         "what is on my calendar", "send a message to anna", "lower the volume", "read me the news",
         "wake me up at seven", "where is the nearest station", "add milk to the shopping list"]


def main(out: Path) -> None:
    records = []
    for i, text in enumerate(TEXTS):
        name = f"{i:02d}_{'_'.join(text.split()[:4])}.wav"
        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", tmp.name, text], check=True)
            with wave.open(tmp.name) as clip:
                rate, raw = clip.getframerate(), clip.readframes(clip.getnframes())
        x = np.frombuffer(raw, dtype=np.int16).astype(np.float64)
        g = gcd(rate, 16000)
        y = np.clip(np.round(resample_poly(x, 16000 // g, rate // g)), -32768, 32767).astype(np.int16)
        with wave.open(str(out / name), "wb") as clip:
            clip.setnchannels(1)
            clip.setsampwidth(2)
            clip.setframerate(16000)
            clip.writeframes(y.tobytes())
        records.append({"audio": name, "text": text})
    (out / "transcripts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
