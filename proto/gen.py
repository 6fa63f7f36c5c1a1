"""Generates the Python contracts (messages, gRPC and Connect stubs) in postbacks/v1/ from proto/; with --check,
fails if they are stale."""

import argparse
import filecmp
import pathlib
import sys
import tempfile

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = pathlib.Path("postbacks") / "v1"
INIT_DOCSTRINGS = {
    pathlib.Path("postbacks") / "__init__.py": '"""Generated gRPC contracts of the postbacks service (make proto)."""\n',
    PACKAGE_DIR / "__init__.py": '"""Generated code for the postbacks.v1 protobuf package: do not edit, run make proto."""\n',
}


def generate(out_dir: pathlib.Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    # The Connect generator is a binary that its PyPI package installs beside this interpreter.
    connect_plugin = pathlib.Path(sys.executable).parent / "protoc-gen-connect-python"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-connect-python={connect_plugin}",
        f"--connect-python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for path, text in INIT_DOCSTRINGS.items():
        (out_dir / path).write_text(text)


def generated_files(root: pathlib.Path) -> set[pathlib.Path]:
    return {p.relative_to(root) for p in (root / "postbacks").rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = pathlib.Path(tmp)
        generate(fresh)
        expected, committed = generated_files(fresh), generated_files(ROOT)
        stale = sorted(str(p) for p in expected | committed
                       if p not in expected or p not in committed
                       or not filecmp.cmp(fresh / p, ROOT / p, shallow=False))
    if stale:
        print("generated code is stale; run `make proto`:", *stale, sep="\n  ")
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    if parser.parse_args().check:
        return check()
    generate(ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
