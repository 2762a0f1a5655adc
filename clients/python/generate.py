#!/usr/bin/env python3
"""Builds the importable squeeze_client package: the wrapper's sources plus Python code generated
from the service's protos, into OUT/squeeze_client.

protoc writes absolute imports ("from squeeze.v1 import stages_pb2"); they are rewritten to point
inside the package, so that the generated modules never clash with another package's copy of
the same protos.

usage: generate.py --out DIR [--proto-dir DIR] [--protoc PROTOC] [--grpc-plugin PLUGIN]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOS = ["squeeze/v1/jobs.proto", "squeeze/v1/stages.proto"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory that receives squeeze_client/")
    parser.add_argument("--proto-dir", default=os.path.join(HERE, "..", "..", "proto"))
    parser.add_argument("--protoc", default=shutil.which("protoc") or "protoc")
    parser.add_argument("--grpc-plugin",
                        default=shutil.which("grpc_python_plugin") or "grpc_python_plugin")
    args = parser.parse_args()

    package = os.path.join(args.out, "squeeze_client")
    generated = os.path.join(package, "_proto")
    if os.path.isdir(package):
        shutil.rmtree(package)
    shutil.copytree(os.path.join(HERE, "squeeze_client"), package,
                    ignore=shutil.ignore_patterns("__pycache__", "_proto"))
    os.makedirs(generated)
    command = [args.protoc, f"--proto_path={args.proto_dir}", f"--python_out={generated}",
               f"--grpc_python_out={generated}", f"--plugin=protoc-gen-grpc_python={args.grpc_plugin}"]
    result = subprocess.run(command + PROTOS, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"generate.py: protoc failed:\n{result.stderr}")
    for root, _, files in os.walk(generated):
        with open(os.path.join(root, "__init__.py"), "a"):
            pass
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            with open(path) as f:
                text = f.read()
            text = re.sub(r"^from squeeze\.v1 import", "from squeeze_client._proto.squeeze.v1 import",
                          text, flags=re.M)
            with open(path, "w") as f:
                f.write(text)
    print(f"generate.py: wrote {package}")


if __name__ == "__main__":
    main()
