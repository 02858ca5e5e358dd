"""Build hooks: generate the gRPC code from proto/ and ship the bootstraps.

Both steps run on every build into the build directory, so an install never
depends on files left over from an earlier build. The Java bootstrap ships
compiled (bootstrap.jar, by bootstraps/java/build.py) or not at all: on a
host without a JDK 17+ the install still works and offers no Java runtime;
likewise the Runtime API relay of custom runtimes (bootstraps/relay, C)
ships built or not at all.
"""

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).parent.resolve()


class BuildWithProtos(build_py):
    def run(self):
        super().run()
        out = pathlib.Path(self.build_lib)
        self._generate_protos(out)
        self._copy_bootstraps(out)

    def _generate_protos(self, out: pathlib.Path) -> None:
        import grpc_tools
        from grpc_tools import protoc

        proto_root = ROOT / "proto"
        include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
        files = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
        pkg = out / "runtime" / "v1"
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").write_text('"""Generated from proto/runtime/v1 at build time."""\n')
        args = ["protoc", f"-I{proto_root}", f"-I{include}", f"--python_out={out}",
                f"--pyi_out={out}", f"--grpc_python_out={out}", *files]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {files}")

    def _copy_bootstraps(self, out: pathlib.Path) -> None:
        dest = out / "runtime" / "_bootstraps"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(ROOT / "bootstraps", dest,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "target", "node_modules"))
        self._build_java(dest / "java")
        self._build_relay(dest / "relay")

    def _build_java(self, java: pathlib.Path) -> None:
        spec = importlib.util.spec_from_file_location("java_build", ROOT / "bootstraps" / "java" / "build.py")
        build = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(build)
        shutil.rmtree(java / "src")
        (java / "build.py").unlink()
        why = build.build(java / build.JAR)
        if why:
            print(f"warning: no Java runtime: {why}", file=sys.stderr)

    def _build_relay(self, relay: pathlib.Path) -> None:
        """The Runtime API relay, linked statically (no loader or libc to map
        at every start); dynamically where the host has no static libc."""
        src = relay / "relay.c"
        cc = os.environ.get("CC", "cc")
        base = [cc, "-O2", "-Wall", "-s", "-o", str(relay / "relay"), str(src)]
        why = ""
        for extra in (["-static"], []):
            try:
                proc = subprocess.run(base + extra, capture_output=True, text=True)
            except OSError as exc:
                why = f"{cc}: {exc.strerror}"
                break
            if proc.returncode == 0:
                src.unlink()
                return
            why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"{cc} failed"
        shutil.rmtree(relay)
        print(f"warning: no custom runtime (provided): cannot build the relay: {why}", file=sys.stderr)


setup(cmdclass={"build_py": BuildWithProtos})
