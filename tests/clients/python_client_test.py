#!/usr/bin/env python3
"""The Python client (clients/python) against a real coordinator and worker on loopback.

usage: python_client_test.py SOURCE_DIR PACKAGE_DIR COORDINATOR_BIN WORKER_BIN
PACKAGE_DIR holds the squeeze_client package that clients/python/generate.py built."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

SOURCE, PACKAGE, COORDINATOR, WORKER = sys.argv[1:5]
sys.path.insert(0, PACKAGE)

import grpc  # noqa: E402
from squeeze_client import Client, SqueezeError, jobs_pb2  # noqa: E402
from squeeze_client import digest  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="python_client_test_")
        cls.address = f"127.0.0.1:{free_port()}"
        cls.logs = [open(os.path.join(cls.dir, name), "w")
                    for name in ("coordinator.log", "worker.log")]
        cls.coordinator = subprocess.Popen(
            [COORDINATOR, "--listen", cls.address, "--state-dir", os.path.join(cls.dir, "state")],
            stdout=cls.logs[0], stderr=subprocess.STDOUT)
        cls.worker = subprocess.Popen(
            [WORKER, "--coordinator", cls.address, "--node", "py", "--scratch",
             os.path.join(cls.dir, "scratch"), "--threads", "2"],
            stdout=cls.logs[1], stderr=subprocess.STDOUT)
        cls.client = Client(cls.address)
        deadline = time.time() + 30
        while True:
            try:
                list(cls.client.list())
                break
            except SqueezeError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        for p in (cls.worker, cls.coordinator):
            p.kill()
            p.wait()
        for log in cls.logs:
            log.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def recipe(self, stages):
        return (f"model: {SOURCE}/deploy/models/fortunes-teacher\n"
                f"data: {{calibration: {SOURCE}/deploy/data/fortunes/calibration.jsonl, "
                f"evaluation: [{SOURCE}/deploy/data/fortunes/evaluation.jsonl]}}\n"
                f"stages:\n{stages}")

    def test_submit_watch_results_download(self):
        recipe = self.recipe("  - evaluate: {max_examples: 16, window: 128, stride: 64}\n"
                             "  - quantize: {method: rtn, bits: 4, group_size: 128}\n"
                             "  - evaluate: {max_examples: 16, window: 128, stride: 64}\n")
        job = self.client.submit(recipe, request_id="py-1")
        self.assertEqual(job.state, jobs_pb2.QUEUED)
        again = self.client.submit(recipe, request_id="py-1")
        self.assertEqual(again.id, job.id, "a retried submit returns the first job")

        seen = []
        final = self.client.watch(job.id, seen.append)
        self.assertEqual(final.state, jobs_pb2.SUCCEEDED, final.error)
        fractions = [w.fraction for w in seen if w.fraction is not None]
        self.assertTrue(fractions, "progress events reach the callback")
        self.assertEqual(max(fractions), 1.0, "progress reaches its total")
        self.assertTrue(any(w.tokens_per_second for w in seen), "live tokens/s while evaluating")
        self.assertTrue(final.HasField("finish_time"))
        self.assertGreaterEqual(final.finish_time.ToDatetime(), final.create_time.ToDatetime())

        results = self.client.results(job.id)
        self.assertEqual([r["kind"] for r in results], ["evaluate", "quantize", "evaluate"])
        base = results[0]["result"]["evaluate"]["perplexity"]
        after = results[2]["result"]["evaluate"]["perplexity"]
        self.assertGreater(base, 1.0)
        self.assertGreaterEqual(after, base * 0.95)
        self.assertEqual(results[1]["result"]["quantize"]["bits"], 4)

        artifacts = self.client.artifacts(job.id)
        model = [a for a in artifacts if a.name == "model"][-1]
        self.assertGreater(model.size_bytes, 0)
        dest = os.path.join(self.dir, "download")
        paths = self.client.download(job.id, dest)
        self.assertEqual(sorted(os.path.basename(p) for p in paths),
                         sorted(f.name for f in model.files))
        for f in model.files:
            path = os.path.join(dest, f.name)
            self.assertEqual(os.path.getsize(path), f.size_bytes, f.name)
            self.assertEqual(digest.file_digest(path, f.digest), f.digest, f.name)
        self.assertIn("config.json", [os.path.basename(p) for p in paths])
        report = self.client.download(job.id, dest, name="report")
        self.assertEqual([os.path.basename(p) for p in report], ["report.json"])

        with self.assertRaises(SqueezeError) as cancelled:
            self.client.cancel(job.id)
        self.assertEqual(cancelled.exception.code, grpc.StatusCode.FAILED_PRECONDITION)

    def test_bad_input_names_the_field(self):
        with self.assertRaises(SqueezeError) as bad:
            self.client.submit(self.recipe("  - quantize: {bits: 7}\n"))
        self.assertEqual(bad.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual([f for f, _ in bad.exception.field_violations],
                         ["recipe_yaml.stages[0].quantize.bits"])
        with self.assertRaises(SqueezeError) as reused:
            self.client.submit(self.recipe("  - evaluate: {max_examples: 4}\n"), request_id="r")
            self.client.submit(self.recipe("  - evaluate: {max_examples: 5}\n"), request_id="r")
        self.assertEqual(reused.exception.code, grpc.StatusCode.ALREADY_EXISTS)
        with self.assertRaises(SqueezeError) as missing:
            self.client.get("job-doesnotexist")
        self.assertEqual(missing.exception.code, grpc.StatusCode.NOT_FOUND)

    def test_digest_matches_the_stores_scheme(self):
        path = os.path.join(self.dir, "big.bin")
        with open(path, "wb") as f:
            f.write(b"\x01" * ((16 << 20) + 5))
        self.assertTrue(digest.file_digest(path, "sha256-c16m:").startswith("sha256-c16m:"))
        with open(path, "wb") as f:
            f.write(b"abc")
        self.assertEqual(
            digest.file_digest(path, "sha256:"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
