"""A small client for Squeeze's job API: submit a recipe, watch it with progress, read each
stage's results and download what the job wrote. Built by clients/python/generate.py."""
from squeeze_client.client import Client, SqueezeError, Watched
from squeeze_client._proto.squeeze.v1 import jobs_pb2, stages_pb2

__all__ = ["Client", "SqueezeError", "Watched", "jobs_pb2", "stages_pb2"]
