"""Uploads for the web app: safe zip extraction and importing a zipped capture into a run.

`safe_extract_zip` never writes outside its destination and refuses, before writing anything, an archive
with absolute paths, ``..`` components, drive letters, symbolic links or other special files, encrypted
or duplicate members, too many members, or too many bytes (declared sizes, per-member compression ratio);
while writing it counts the real bytes too, so a member whose header lies stops at its declared size.
Nothing extracted is made executable, and no archive member is ever unpickled or run: images are decoded
by imageio, arrays by ``np.load(allow_pickle=False)``, YAML by ``yaml.safe_load``, JSON by ``json``.

`import_capture` finds what kind of capture a zip holds (our capture folder, a nerfstudio folder with
depth, or a DexYCB sequence), checks that every path the readers will follow stays inside the upload
(`recon.readers.nerfstudio` and `recon.readers.dexycb` follow paths and camera serials from the files
as they are), checks image sizes from their headers, and converts it into ``<run>/capture``. Every
problem raises `UploadError`, whose message names the file inside the zip (``capture.zip/rgb/cam0.png:
...``) rather than a temporary folder.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

__all__ = [
    "ExtractLimits",
    "UnsafeArchiveError",
    "UploadError",
    "CaptureSource",
    "find_capture_source",
    "import_capture",
    "safe_extract_zip",
]

UploadKind = Literal["auto", "capture", "nerfstudio", "dexycb"]
IGNORED_PARTS = ("__MACOSX",)
"""Archive folders that carry no data (macOS resource forks); skipped, never extracted."""
IGNORED_NAMES = (".DS_Store", "Thumbs.db")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9_.-]+$")
_CHUNK = 1 << 20


class UploadError(ValueError):
    """An upload that cannot become a capture; the message names the file inside the upload."""


class UnsafeArchiveError(UploadError):
    """An archive refused by `safe_extract_zip` (unsafe paths, links, bombs, corrupt data)."""


@dataclass(frozen=True)
class ExtractLimits:
    """What `safe_extract_zip` accepts."""

    max_files: int = 20_000
    """Most members (files and folders) in one archive."""
    max_total_bytes: int = 8 * 1024**3
    """Most bytes all members may hold once extracted."""
    max_file_bytes: int = 2 * 1024**3
    """Most bytes one member may hold once extracted."""
    max_ratio: float = 200.0
    """Largest compression ratio (extracted / compressed bytes) of a member ..."""
    ratio_min_bytes: int = 1024**2
    """... counted only for members larger than this once extracted (small files compress freely)."""
    max_image_pixels: int = 40_000_000
    """Largest image (width x height, read from its header) `import_capture` decodes."""


def _member_path(name: str) -> PurePosixPath | None:
    """The member's relative path, or None for a member to skip; raises for unsafe names."""
    if "\x00" in name:
        raise UnsafeArchiveError(f"{name!r}: a member name holds a NUL character")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise UnsafeArchiveError(f"{name}: absolute path in the archive; members must be relative paths")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{name}: '..' in a member path would write outside the upload folder")
    if not parts:
        return None
    if any(p in IGNORED_PARTS for p in parts) or parts[-1] in IGNORED_NAMES:
        return None
    return PurePosixPath(*parts)


def _check_members(zf: zipfile.ZipFile, limits: ExtractLimits) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    infos = zf.infolist()
    if len(infos) > limits.max_files:
        raise UnsafeArchiveError(
            f"the archive has {len(infos)} members; the app accepts at most {limits.max_files}"
        )
    members: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    seen: dict[str, str] = {}
    total = 0
    for info in infos:
        rel = _member_path(info.filename)
        if rel is None:
            continue
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise UnsafeArchiveError(f"{info.filename}: symbolic link in the archive; links are not accepted")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchiveError(f"{info.filename}: not a regular file or folder (mode {oct(mode)})")
        if info.flag_bits & 0x1:
            raise UnsafeArchiveError(f"{info.filename}: encrypted member; upload an unencrypted zip")
        key = rel.as_posix().lower()  # case-insensitive: one file on every filesystem
        if key in seen and not info.is_dir():
            raise UnsafeArchiveError(f"{info.filename}: appears twice in the archive (also as {seen[key]})")
        seen[key] = info.filename
        if info.is_dir():
            members.append((info, rel))
            continue
        if info.file_size > limits.max_file_bytes:
            raise UnsafeArchiveError(
                f"{info.filename}: {info.file_size} bytes once extracted; the limit is {limits.max_file_bytes}"
            )
        if info.file_size > limits.ratio_min_bytes and info.file_size > limits.max_ratio * max(
            info.compress_size, 1
        ):
            raise UnsafeArchiveError(
                f"{info.filename}: compressed {info.file_size / max(info.compress_size, 1):.0f}:1 "
                f"(limit {limits.max_ratio:.0f}:1); refused as a possible decompression bomb"
            )
        total += info.file_size
        if total > limits.max_total_bytes:
            raise UnsafeArchiveError(
                f"the archive holds more than {limits.max_total_bytes} bytes once extracted (limit reached "
                f"at {info.filename})"
            )
        members.append((info, rel))
    return members


def safe_extract_zip(
    archive: str | Path, dest: str | Path, limits: ExtractLimits | None = None
) -> list[Path]:
    """Extracts the regular files and folders of a zip into ``dest`` (created; must not exist or be empty).

    Args:
        archive: The zip file.
        dest: Where its members go; nothing is ever written outside it.
        limits: Member count and size limits (`ExtractLimits`).

    Returns:
        The extracted files (not folders), in archive order.

    Raises:
        UnsafeArchiveError: For anything unsafe or corrupt (module docstring); ``dest`` is then removed
            again if this call created it, or emptied if it was empty.
    """
    limits = limits or ExtractLimits()
    archive, dest = Path(archive), Path(dest)
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise UnsafeArchiveError(f"{dest}: the extraction folder must be new or empty")
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written: list[Path] = []
    try:
        try:
            zf = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError) as exc:
            raise UnsafeArchiveError(f"{archive.name}: not a readable zip file ({exc})") from exc
        with zf:
            members = _check_members(zf, limits)
            total = 0
            for info, rel in members:
                target = root.joinpath(*rel.parts)
                if root not in target.parents:
                    raise UnsafeArchiveError(f"{info.filename}: resolves outside the upload folder")
                try:
                    (target if info.is_dir() else target.parent).mkdir(parents=True, exist_ok=True)
                except OSError as exc:  # a file where a folder should be, or the reverse
                    raise UnsafeArchiveError(f"{info.filename}: cannot be extracted ({exc})") from exc
                if info.is_dir():
                    continue
                # Refuse to write through anything that is not a plain folder we made (belt and braces).
                for parent in target.parents:
                    if parent == root:
                        break
                    if parent.is_symlink() or not parent.is_dir():
                        raise UnsafeArchiveError(f"{info.filename}: a parent folder is not a plain folder")
                if target.exists():
                    raise UnsafeArchiveError(f"{info.filename}: a file or folder of that name already exists")
                size = 0
                try:
                    with zf.open(info) as src, open(target, "xb") as out:
                        while block := src.read(_CHUNK):
                            size += len(block)
                            total += len(block)
                            if size > info.file_size or size > limits.max_file_bytes:
                                raise UnsafeArchiveError(
                                    f"{info.filename}: holds more bytes than its header declares"
                                )
                            if total > limits.max_total_bytes:
                                raise UnsafeArchiveError(
                                    f"the archive holds more than {limits.max_total_bytes} bytes once extracted"
                                )
                            out.write(block)
                except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, ValueError) as exc:
                    if isinstance(exc, UnsafeArchiveError):
                        raise
                    raise UnsafeArchiveError(f"{info.filename}: cannot be extracted ({exc})") from exc
                target.chmod(0o644)
                written.append(target)
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        else:
            for child in dest.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        raise
    return written


# --------------------------------------------------------------------------------------------------
# What the upload holds
# --------------------------------------------------------------------------------------------------


@dataclass
class CaptureSource:
    """Where in an extracted upload the capture is, and of which kind."""

    kind: Literal["capture", "nerfstudio", "dexycb"]
    path: Path
    """capture: the folder holding capture.json; nerfstudio: transforms.json; dexycb: the DexYCB root."""
    sequence: str | None = None
    """dexycb: the sequence folder relative to the root (holding meta.yml)."""


def _find(root: Path, name: str, max_depth: int = 4) -> list[Path]:
    found = []
    for p in sorted(root.rglob(name)):
        if p.is_file() and len(p.relative_to(root).parts) <= max_depth + 1:
            found.append(p)
    return found


def _shown(path: Path, root: Path, label: str) -> str:
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
    return f"{label}/{rel}" if rel != "." else label


def find_capture_source(
    root: Path, kind: UploadKind = "auto", sequence: str = "", label: str = "upload"
) -> CaptureSource:
    """Finds the capture in an extracted upload.

    Args:
        root: The extraction folder.
        kind: What to look for; auto tries capture.json, then transforms.json, then DexYCB's meta.yml.
        sequence: DexYCB: the sequence folder relative to the DexYCB root, when the upload holds several.
        label: How to name the upload in messages (the zip's file name).
    """
    captures = _find(root, "capture.json") if kind in ("auto", "capture") else []
    transforms = _find(root, "transforms.json") if kind in ("auto", "nerfstudio") else []
    metas = _find(root, "meta.yml", max_depth=6) if kind in ("auto", "dexycb") else []

    def one(paths: list[Path], what: str) -> Path:
        if len(paths) > 1:
            names = ", ".join(_shown(p, root, label) for p in paths[:5])
            raise UploadError(f"{label}: holds several {what} ({names}); upload one capture per zip")
        return paths[0]

    if captures:
        return CaptureSource("capture", one(captures, "capture.json files").parent)
    if transforms:
        return CaptureSource("nerfstudio", one(transforms, "transforms.json files"))
    if metas:
        candidates = []
        for meta in metas:
            for parent in meta.parents:
                if (parent / "calibration").is_dir():
                    candidates.append((parent, meta.parent.relative_to(parent).as_posix()))
                    break
                if parent == root:
                    break
        if not candidates:
            raise UploadError(
                f"{_shown(metas[0], root, label)}: a DexYCB meta.yml, but no calibration/ folder above it; zip "
                "the DexYCB root with calibration/ and the sequence folder"
            )
        if sequence:
            _check_relative(sequence, f"{label}: sequence")
            chosen = [c for c in candidates if c[1] == sequence.strip("/")]
            if not chosen:
                raise UploadError(
                    f"{label}: no DexYCB sequence {sequence!r}; it holds {[c[1] for c in candidates]}"
                )
            return CaptureSource("dexycb", chosen[0][0], chosen[0][1])
        if len(candidates) > 1:
            raise UploadError(
                f"{label}: holds several DexYCB sequences {[c[1] for c in candidates][:5]}; type which one "
                "to import"
            )
        return CaptureSource("dexycb", candidates[0][0], candidates[0][1])
    wanted = {
        "auto": "capture.json (a splatsim capture), transforms.json (nerfstudio) or meta.yml with "
        "calibration/ (DexYCB)",
        "capture": "capture.json (a splatsim capture folder)",
        "nerfstudio": "transforms.json (a nerfstudio folder with depth)",
        "dexycb": "meta.yml with a calibration/ folder (a DexYCB sequence)",
    }[kind]
    raise UploadError(f"{label}: holds no {wanted}; see docs/capture_format.md")


def _check_relative(value: Any, where: str) -> None:
    """Raises unless ``value`` is a relative path that stays inside its folder."""
    if not isinstance(value, str) or not value:
        raise UploadError(f"{where} = {value!r}; expected a relative file path")
    norm = value.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or ".." in norm.split("/") or "\x00" in norm:
        raise UploadError(
            f"{where} = {value!r}; paths in an upload must be relative and stay inside it (no absolute "
            "paths, no '..')"
        )


def check_source_paths(source: CaptureSource, root: Path, label: str) -> None:
    """Raises `UploadError` when a file of the upload points the readers outside the upload.

    nerfstudio: every frame's file_path, depth_file_path and mask_path; DexYCB: the camera serials and
    calibration name in meta.yml, which the reader joins into paths. (capture.json's paths are checked
    by `recon.capture.load_capture` itself.)
    """
    if source.kind == "nerfstudio":
        where = _shown(source.path, root, label)
        try:
            data = json.loads(source.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UploadError(f"{where}: cannot read it as JSON ({exc})") from exc
        frames = data.get("frames") if isinstance(data, dict) else None
        if not isinstance(frames, list):
            raise UploadError(f"{where}: expected a JSON object with a 'frames' list")
        for i, fr in enumerate(frames):
            if not isinstance(fr, dict):
                continue
            for key in ("file_path", "depth_file_path", "mask_path"):
                if fr.get(key) is not None:
                    _check_relative(fr[key], f"{where}: frames[{i}].{key}")
    elif source.kind == "dexycb":
        import yaml

        meta_path = source.path / (source.sequence or "") / "meta.yml"
        where = _shown(meta_path, root, label)
        try:
            meta = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise UploadError(f"{where}: cannot read it as YAML ({exc})") from exc
        if not isinstance(meta, dict):
            raise UploadError(f"{where}: expected a mapping (is this a DexYCB meta.yml?)")
        values = [("serials", s) for s in (meta.get("serials") or [])]
        values.append(("extrinsics", meta.get("extrinsics")))
        for key, value in values:
            if value is None:
                continue
            text = str(value)
            if not _SAFE_COMPONENT.match(text) or text in (".", ".."):
                raise UploadError(
                    f"{where}: {key} entry {text!r}; expected a plain name (letters, digits, '_', '-', '.')"
                )


def check_image_sizes(root: Path, label: str, max_pixels: int) -> None:
    """Raises `UploadError` for an image whose header declares more than ``max_pixels`` pixels."""
    from PIL import Image, UnidentifiedImageError

    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in _IMAGE_SUFFIXES or not path.is_file():
            continue
        try:
            with Image.open(path) as im:  # reads the header only
                w, h = im.size
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise UploadError(f"{_shown(path, root, label)}: not a readable image ({exc})") from exc
        if w * h > max_pixels:
            raise UploadError(
                f"{_shown(path, root, label)}: {w}x{h} pixels; the app takes images up to {max_pixels} pixels"
            )


def _relabel(message: str, staging: Path, label: str) -> str:
    """Replaces the temporary extraction folder in a message by the upload's name."""
    for p in {str(staging.resolve()), str(staging)}:
        message = message.replace(p + "/", label + "/").replace(p, label)
    return message


def import_capture(
    archive: str | Path,
    capture_dir: str | Path,
    *,
    kind: UploadKind = "auto",
    label: str | None = None,
    dexycb_sequence: str = "",
    dexycb_frame: int = 0,
    dexycb_serials: list[str] | None = None,
    depth_unit_scale_factor: float = 1e-3,
    limits: ExtractLimits | None = None,
    staging_parent: str | Path | None = None,
):
    """Extracts a zipped capture safely, validates it and writes it as a capture folder.

    Args:
        archive: The uploaded zip.
        capture_dir: The capture folder to write (replaced if it exists).
        kind: What the zip holds (auto: find out).
        label: The upload's name in messages (default: the zip's file name).
        dexycb_sequence, dexycb_frame, dexycb_serials: Which DexYCB sequence, frame and cameras.
        depth_unit_scale_factor: nerfstudio: metres per depth-file unit.
        limits: Extraction limits.
        staging_parent: Where the temporary extraction folder goes (default: beside ``capture_dir``).

    Returns:
        The loaded, validated `recon.capture.Capture`.

    Raises:
        UploadError: Naming the file inside the upload and what is wrong with it.
    """
    from recon.capture import CaptureError, load_capture

    archive, capture_dir = Path(archive), Path(capture_dir)
    label = label or archive.name
    limits = limits or ExtractLimits()
    parent = Path(staging_parent) if staging_parent is not None else capture_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=parent))
    extracted = staging / "x"
    try:
        try:
            safe_extract_zip(archive, extracted, limits)
        except UnsafeArchiveError as exc:
            raise UnsafeArchiveError(f"{label}: {exc}") from exc
        check_image_sizes(extracted, label, limits.max_image_pixels)
        source = find_capture_source(extracted, kind, dexycb_sequence, label)
        check_source_paths(source, extracted, label)
        try:
            if source.kind == "capture":
                load_capture(source.path)  # validates every file before anything moves
                if capture_dir.exists():
                    shutil.rmtree(capture_dir)
                shutil.move(str(source.path), str(capture_dir))
            elif source.kind == "nerfstudio":
                from recon.readers.nerfstudio import read_nerfstudio

                read_nerfstudio(source.path, capture_dir, depth_unit_scale_factor, overwrite=True)
            else:
                from recon.readers.dexycb import read_dexycb

                read_dexycb(
                    source.path,
                    source.sequence or "",
                    int(dexycb_frame),
                    dexycb_serials or None,
                    capture_dir,
                    overwrite=True,
                )
            return load_capture(capture_dir)
        except (CaptureError, ValueError, OSError) as exc:
            if isinstance(exc, UploadError):
                raise
            raise UploadError(_relabel(str(exc), extracted, label)) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
