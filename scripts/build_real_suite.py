"""Rebuild `speech_adapter/resources/real/` (the `real` eval suite) from public git mirrors.

    python scripts/build_real_suite.py --mirrors /work/.mirror

Every clip is read from a git mirror (`<mirrors>/<owner>+<name>/repo`, a bare clone of the
repository at the commit recorded in the manifest), converted to 16 kHz mono FLAC (PCM_16),
trimmed to at most 20 s and scaled down only if resampling made it clip. Only labels the source
states are written: gender from a speaker table or naming convention (named in `SOURCES`),
transcripts from the source's own transcription file. The shipped files are what users use;
this script documents how they were made.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

SR = 16000
MAX_S = 20.0
OUT = Path(__file__).resolve().parents[1] / "speech_adapter" / "resources" / "real"

AN4 = "cmusphinx/an4"
AN4_LICENSE = "AN4 License Terms (CMU, free for any purpose, BSD-style; see LICENSE in cmusphinx/an4)"
AN4_GENDER = "AN4 speaker-id convention: the first letter of the speaker id is f (female) or m (male)"
ARCTIC_LICENSE = "CMU ARCTIC license (free for any use, BSD-style, attribution); file shipped in LCAV/pyroomacoustics (MIT)"
ARCTIC_GENDER = "pyroomacoustics/datasets/cmu_arctic.py speaker table (aew: male, axb: female)"
# CMU ARCTIC prompt list (etc/arctic.data), utterances a0001..a0006
ARCTIC_TEXT = {
    "a0001": "Author of the danger trail, Philip Steels, etc.",
    "a0002": "Not at this particular case, Tom, apologized Whittemore.",
    "a0003": "For the twentieth time that evening the two men shook hands.",
    "a0004": "Lord, but I'm glad to see you again, Phil.",
    "a0005": "Will we ever forget it.",
    "a0006": "God bless 'em, I hope I'll go on seeing them forever.",
}
LIBRI_LICENSE = "CC-BY 4.0 (LibriSpeech, openslr.org/12)"
VCTK_LICENSE = "CC-BY 4.0 (CSTR VCTK corpus, University of Edinburgh)"
VCTK_GENDER = "VCTK speaker-info.txt (p240: female, p260: male, p286: male)"
SPEECH_COMMANDS = "CC-BY 4.0 (Google Speech Commands dataset, _background_noise_)"
UNDOCUMENTED_MIT = ("MIT (license of the iver56/audiomentations repository that ships it; "
                    "the recording's original source is not documented there)")


def clip(cid, repo, path, *, speech, license, gender=None, gender_evidence=None, speaker=None,
         transcript=None, sound=None, start=0.0, desc=None):
    return dict(id=cid, repo=repo, path=path, speech=speech, license=license, gender=gender,
                gender_evidence=gender_evidence, speaker=speaker, transcript=transcript, sound=sound,
                start=start, desc=desc)


def an4_clips(mirrors: Path, n_female: int, n_male: int) -> list[dict]:
    """One utterance per AN4 speaker (the one with the most multi-letter words), test set first."""
    git = mirrors / "cmusphinx+an4" / "repo"
    by_speaker: dict[str, list[tuple[str, str, str]]] = {}
    for split, folder in (("test", "an4test_clstk"), ("train", "an4_clstk")):
        text = show(git, f"etc/an4_{split}.transcription").decode()
        for line in text.splitlines():
            line = line.replace("<s>", "").replace("</s>", "").strip()
            if not line:
                continue
            words, uid = line.rsplit("(", 1)
            uid = uid.rstrip(")").strip()
            spk = uid.split("-")[1]
            by_speaker.setdefault(spk, []).append((uid, words.strip().lower(), f"wav/{folder}/{spk}/{uid}.wav"))
    out = []
    for prefix, n, gender in (("f", n_female, "female"), ("m", n_male, "male")):
        speakers = sorted(s for s in by_speaker if s.startswith(prefix))[:n]
        for spk in speakers:
            uid, words, path = max(by_speaker[spk], key=lambda u: (sum(len(w) > 1 for w in u[1].split()),
                                                                  len(u[1].split()), u[0]))
            out.append(clip(f"an4-{uid}", AN4, path, speech=True, license=AN4_LICENSE, gender=gender,
                            gender_evidence=AN4_GENDER, speaker=f"an4:{spk}", transcript=words))
    return out


def static_clips() -> list[dict]:
    pra = "LCAV/pyroomacoustics"
    rtvc = "CorentinJ/Real-Time-Voice-Cloning"
    lib = "librosa/data"
    aug = "iver56/audiomentations"
    out = []
    for spk, gender, utts in (("aew", "male", ("a0001", "a0002", "a0003")),
                              ("axb", "female", ("a0004", "a0005", "a0006"))):
        for u in utts:
            out.append(clip(f"arctic-{spk}-{u}", pra, f"examples/input_samples/cmu_arctic_us_{spk}_{u}.wav",
                            speech=True, license=ARCTIC_LICENSE, gender=gender, gender_evidence=ARCTIC_GENDER,
                            speaker=f"cmu_arctic:{spk}", transcript=ARCTIC_TEXT[u]))
    out += [
        clip("vctk-p240", rtvc, "samples/p240_00000.mp3", speech=True, license=VCTK_LICENSE, gender="female",
             gender_evidence=VCTK_GENDER, speaker="vctk:p240"),
        clip("vctk-p260", rtvc, "samples/p260_00000.mp3", speech=True, license=VCTK_LICENSE, gender="male",
             gender_evidence=VCTK_GENDER, speaker="vctk:p260"),
        clip("vctk-p286-011", aug, "demo/p286_011.wav", speech=True,
             license="CC-BY 4.0 (CSTR noisy speech database, derived from VCTK; see demo/p286_011_license)",
             gender="male", gender_evidence=VCTK_GENDER, speaker="vctk:p286"),
        clip("whisper-jfk", "openai/whisper", "tests/jfk.flac", speech=True,
             license="public domain (J. F. Kennedy's 1961 inaugural address, a US federal government work); "
                     "file shipped in openai/whisper (MIT)",
             gender="male", gender_evidence="the speaker is John F. Kennedy (openai/whisper tests/test_transcribe.py)",
             speaker="jfk",
             transcript="And so, my fellow Americans, ask not what your country can do for you, "
                        "ask what you can do for your country."),
    ]
    # LibriSpeech excerpts: speaker ids are known, gender is not stated by these sources -> unknown
    for spk in ("1320", "3575", "6829", "8230"):
        out.append(clip(f"librispeech-rtvc-{spk}", rtvc, f"samples/{spk}_00000.mp3", speech=True,
                        license=LIBRI_LICENSE, speaker=f"librispeech:{spk}"))
    for name, desc in (("198-209-0000", "Sense and Sensibility, ch. 18"),
                       ("3436-172162-0000", "The Age of Chivalry, ch. 18"),
                       ("5703-47212-0000", "Ashiel Mystery, ch. 2")):
        out.append(clip(f"librispeech-{name}", lib, f"audio/{name}.hq.ogg", speech=True, license=LIBRI_LICENSE,
                        speaker=f"librispeech:{name.split('-')[0]}", desc=desc))
    nonspeech = [
        ("music-brahms", lib, "audio/Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).hq.ogg",
         "music", "public domain (US Army Strings via Musopen; librosa/data audio/*.txt)", 0.0),
        ("music-nutcracker", lib, "audio/Kevin_MacLeod_-_P_I_Tchaikovsky_Dance_of_the_Sugar_Plum_Fairy.hq.ogg",
         "music", "CC-BY 3.0 (Kevin MacLeod; librosa/data audio/*.txt)", 0.0),
        ("music-vibeace", lib, "audio/Kevin_MacLeod_-_Vibe_Ace.hq.ogg",
         "music", "CC-BY 3.0 (Kevin MacLeod; librosa/data audio/*.txt)", 0.0),
        ("music-trumpet", lib, "audio/sorohanro_-_solo-trumpet-06.hq.ogg",
         "music", "CC-BY 3.0 (Mihai Sorohan, freesound.org/s/77711; librosa/data audio/*.txt)", 0.0),
        ("animal-robin", lib, "audio/456440__inspectorj__bird-whistling-robin-single-13.hq.ogg",
         "animal", "CC-BY 3.0 (InspectorJ, freesound.org 456440; librosa/data audio/*.txt)", 0.0),
        ("animal-humpback", lib, "audio/glacier-bay-humpback.hq.ogg",
         "animal", "public domain (US National Park Service recording; librosa/data audio/*.txt)", 10.0),
        ("noise-dishes", pra, "examples/input_samples/doing_the_dishes.wav",
         "noise", SPEECH_COMMANDS + "; file shipped in LCAV/pyroomacoustics (MIT)", 10.0),
        ("animal-hens", aug, "demo/background_noises/hens.ogg", "animal", UNDOCUMENTED_MIT, 0.0),
        ("animal-sheep", aug, "demo/background_noises/sheep.ogg", "animal", UNDOCUMENTED_MIT, 0.0),
    ]
    for cid, repo, path, sound, lic, start in nonspeech:
        out.append(clip(cid, repo, path, speech=False, license=lic, sound=sound, start=start))
    return out


def show(git: Path, path: str) -> bytes:
    return subprocess.run(["git", "--git-dir", str(git), "show", f"HEAD:{path}"], check=True,
                          capture_output=True).stdout


def head(git: Path) -> str:
    return subprocess.run(["git", "--git-dir", str(git), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


def convert(data: bytes, start: float) -> np.ndarray:
    """16 kHz mono float32, at most MAX_S seconds from `start`, scaled down only if it clips."""
    x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    x = x[int(start * sr): int((start + MAX_S) * sr)]
    if sr != SR:
        x = librosa.resample(x, orig_sr=sr, target_sr=SR)
    x = x[: int(MAX_S * SR)]
    peak = float(np.abs(x).max()) if len(x) else 0.0
    if peak > 0.999:
        x = x * (0.99 / peak)
    return x.astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"), help="folder of <owner>+<name>/repo mirrors")
    ap.add_argument("--out", type=Path, default=OUT, help="output folder (manifest.jsonl + audio/)")
    ap.add_argument("--an4-female", type=int, default=20, help="AN4 female speakers (one clip each)")
    ap.add_argument("--an4-male", type=int, default=20, help="AN4 male speakers (one clip each)")
    args = ap.parse_args(argv)
    (args.out / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for c in an4_clips(args.mirrors, args.an4_female, args.an4_male) + static_clips():
        git = args.mirrors / c["repo"].replace("/", "+") / "repo"
        audio = convert(show(git, c["path"]), c["start"])
        rel = f"audio/{c['id']}.flac"
        sf.write(args.out / rel, audio, SR, format="FLAC", subtype="PCM_16")
        meta = {"speech": c["speech"]}
        if c["gender"]:
            meta["gender"] = c["gender"]
            meta["gender_evidence"] = c["gender_evidence"]
        if c["sound"]:
            meta["sound"] = c["sound"]
        if c["speaker"]:
            meta["speaker"] = c["speaker"]
        meta["source"] = {"repo": c["repo"], "path": c["path"], "commit": head(git),
                          "segment_start_s": c["start"]}
        meta["license"] = c["license"]
        if c["desc"]:
            meta["title"] = c["desc"]
        rows.append({"id": c["id"], "audio": rel, "sampling_rate": SR, "duration": round(len(audio) / SR, 3),
                     "transcript": c["transcript"], "language": "en" if c["speech"] else None, "meta": meta})
    with open(args.out / "manifest.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(rows)} clips -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
