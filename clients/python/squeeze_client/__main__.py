"""python3 -m squeeze_client: submit a recipe and follow it, or read a job's results.

  python3 -m squeeze_client --coordinator HOST:PORT submit RECIPE.yaml [--download DIR]
  python3 -m squeeze_client --coordinator HOST:PORT results JOB_ID
"""
import argparse
import json
import os
import sys

from squeeze_client import Client, SqueezeError, jobs_pb2


def _progress(w):
    if w.fraction is None:
        return
    line = f"\rstage {w.stage} {w.kind:<9} {100 * w.fraction:5.1f}%"
    if w.tokens_per_second:
        line += f" {w.tokens_per_second:.0f} tok/s"
    if w.loss is not None:
        line += f" loss {w.loss:.4f}"
    if w.eta_seconds is not None:
        line += f" eta {w.eta_seconds:.0f}s"
    print(line, end="", file=sys.stderr, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m squeeze_client")
    parser.add_argument("--coordinator", default=os.environ.get("SQUEEZE_COORDINATOR"),
                        required="SQUEEZE_COORDINATOR" not in os.environ)
    sub = parser.add_subparsers(dest="command", required=True)
    submit = sub.add_parser("submit", help="submit a recipe and watch it to the end")
    submit.add_argument("recipe")
    submit.add_argument("--download", help="directory for the final model")
    results = sub.add_parser("results", help="each stage's result as JSON")
    results.add_argument("job_id")
    args = parser.parse_args(argv)
    try:
        with Client(args.coordinator, token=os.environ.get("SQUEEZE_TOKEN")) as client:
            if args.command == "submit":
                with open(args.recipe) as f:
                    job = client.submit(f.read())
                print(f"job {job.id}", file=sys.stderr)
                job = client.watch(job.id, _progress)
                print(f"\njob {job.id} {jobs_pb2.JobState.Name(job.state)}", file=sys.stderr)
                if job.state != jobs_pb2.SUCCEEDED:
                    print(job.error, file=sys.stderr)
                    return 1
                if args.download:
                    client.download(job.id, args.download)
                print(json.dumps(client.results(job.id), indent=2))
            else:
                print(json.dumps(client.results(args.job_id), indent=2))
    except SqueezeError as e:
        print(f"error: {e}", file=sys.stderr)
        for field, description in e.field_violations:
            print(f"  {field}: {description}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
