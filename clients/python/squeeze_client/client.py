"""The job API through gRPC, with the calls a script needs: submit, watch (with progress),
results, artifacts and download. Messages are the generated protobuf classes
(squeeze_client.jobs_pb2); errors are SqueezeError with the fields the service named."""
import os
import time

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

from squeeze_client import digest
from squeeze_client._proto.squeeze.v1 import jobs_pb2, jobs_pb2_grpc


def _rich_error_types():
    """google.rpc.Status and BadRequest, built in a private descriptor pool so that they never
    clash with another package's copy of the Google API protos."""
    F = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(name="squeeze_client/rich_error.proto",
                                           package="google.rpc", syntax="proto3")
    any_type = f.message_type.add(name="Any")  # google.protobuf.Any's layout, renamed locally
    any_type.field.add(name="type_url", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    any_type.field.add(name="value", number=2, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    status = f.message_type.add(name="Status")
    status.field.add(name="code", number=1, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    status.field.add(name="message", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    status.field.add(name="details", number=3, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                     type_name=".google.rpc.Any")
    bad = f.message_type.add(name="BadRequest")
    violation = bad.nested_type.add(name="FieldViolation")
    violation.field.add(name="field", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    violation.field.add(name="description", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    bad.field.add(name="field_violations", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                  type_name=".google.rpc.BadRequest.FieldViolation")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    factory = message_factory.MessageFactory(pool)
    return (factory.GetPrototype(pool.FindMessageTypeByName("google.rpc.Status")),
            factory.GetPrototype(pool.FindMessageTypeByName("google.rpc.BadRequest")))


_Status, _BadRequest = _rich_error_types()


class SqueezeError(Exception):
    """A failed call: `code` (a grpc.StatusCode), the service's message, and for bad input the
    fields it named, as a list of (field, description)."""

    def __init__(self, code, message, field_violations=()):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.field_violations = list(field_violations)

    @classmethod
    def from_rpc(cls, error):
        violations = []
        for key, value in (error.trailing_metadata() or ()):
            if key != "grpc-status-details-bin":
                continue
            status = _Status.FromString(value)
            for any_detail in status.details:
                if any_detail.type_url.endswith("/google.rpc.BadRequest"):
                    bad = _BadRequest.FromString(any_detail.value)
                    violations += [(v.field, v.description) for v in bad.field_violations]
        return cls(error.code(), error.details(), violations)


class Watched:
    """What a watch callback receives: the event, and for a progress update the stage's index,
    kind, fraction done (0..1), and live figures (tokens/s, loss, ETA in seconds or None)."""

    def __init__(self, event):
        self.event = event
        task = event.task if event.HasField("task") else None
        self.stage = task.index if task else None
        self.kind = task.kind if task else None
        progress = task.progress if task else None
        self.fraction = (progress.completed / progress.total
                         if progress and progress.total > 0 else None)
        metrics = task.metrics if task and task.HasField("metrics") else None
        self.tokens_per_second = metrics.tokens_per_second if metrics else None
        self.loss = metrics.loss if metrics and metrics.HasField("loss") else None
        self.eta_seconds = (metrics.eta.ToTimedelta().total_seconds()
                            if metrics and metrics.HasField("eta") else None)


def _call(method, request, **kwargs):
    try:
        return method(request, **kwargs)
    except grpc.RpcError as e:
        raise SqueezeError.from_rpc(e) from None


class Client:
    """A connection to a coordinator at `address` ("host:port"). `token` is sent as a bearer
    token; `root_certificates` (PEM bytes) turns on TLS."""

    def __init__(self, address, token=None, root_certificates=None, timeout=60.0):
        if root_certificates is not None:
            self._channel = grpc.secure_channel(
                address, grpc.ssl_channel_credentials(root_certificates=root_certificates))
        else:
            self._channel = grpc.insecure_channel(address)
        self._stub = jobs_pb2_grpc.JobServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _unary(self, name, request):
        return _call(getattr(self._stub, name), request, metadata=self._metadata,
                     timeout=self._timeout)

    def submit(self, recipe_yaml, request_id="", tenant="", priority=0):
        """Submits a recipe (YAML text); returns the Job. A retry with the same request_id
        returns the first job."""
        response = self._unary("SubmitJob", jobs_pb2.SubmitJobRequest(
            recipe_yaml=recipe_yaml, request_id=request_id, tenant=tenant, priority=priority))
        return response.job

    def get(self, job_id):
        return self._unary("GetJob", jobs_pb2.GetJobRequest(job_id=job_id))

    def cancel(self, job_id):
        return self._unary("CancelJob", jobs_pb2.CancelJobRequest(job_id=job_id))

    def list(self, state=jobs_pb2.JOB_STATE_UNSPECIFIED, tenant="", page_size=0):
        """Every job matching the filter, following the pages."""
        token = ""
        while True:
            page = self._unary("ListJobs", jobs_pb2.ListJobsRequest(
                state=state, tenant=tenant, page_size=page_size, page_token=token))
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return

    def watch(self, job_id, on_event=None, reconnects=100):
        """Follows the job until it ends, calling on_event(Watched) for each event; returns the
        final Job. A coordinator restart is ridden out: the watch resumes after the last event."""
        after = 0
        for _ in range(reconnects):
            stream = self._stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id,
                                                                  after_sequence=after),
                                         metadata=self._metadata)
            try:
                for event in stream:
                    after = event.sequence
                    if on_event:
                        on_event(Watched(event))
                break
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise SqueezeError.from_rpc(e) from None
                time.sleep(0.5)
        return self.get(job_id)

    def results(self, job_id):
        """Each stage's result as a dict (protobuf JSON names): [{"stage", "kind", "state",
        "result"}]; "result" is empty until the stage succeeds."""
        job = self.get(job_id)
        return [{"stage": t.index, "kind": t.kind,
                 "state": jobs_pb2.TaskState.Name(t.state),
                 "result": json_format.MessageToDict(t.result)} for t in job.tasks]

    def artifacts(self, job_id):
        return list(self._unary("ListArtifacts",
                                jobs_pb2.ListArtifactsRequest(job_id=job_id)).artifacts)

    def download(self, job_id, dest, uri=None, name="model"):
        """Downloads one artifact's files into directory `dest` and returns their paths. The
        artifact is `uri`, or else the last one called `name` (the job's final model by default).
        Each file is checked against the digest the service sent before it takes its name."""
        if uri is None:
            named = [a for a in self.artifacts(job_id) if a.name == name]
            if not named:
                raise SqueezeError(grpc.StatusCode.NOT_FOUND,
                                   f"job {job_id} has no artifact called {name!r}")
            uri = named[-1].uri
        os.makedirs(dest, exist_ok=True)
        written, current, out, partial = [], None, None, None

        def finish():
            out.close()
            got = digest.file_digest(partial, current.digest)
            if got != current.digest:
                os.remove(partial)
                raise SqueezeError(grpc.StatusCode.DATA_LOSS,
                                   f"{current.name}: downloaded bytes are {got}, "
                                   f"expected {current.digest}")
            final = os.path.join(dest, current.name)
            os.replace(partial, final)
            written.append(final)

        stream = self._stub.DownloadArtifact(
            jobs_pb2.DownloadArtifactRequest(job_id=job_id, uri=uri), metadata=self._metadata)
        try:
            for piece in stream:
                if piece.HasField("file"):
                    if current is not None:
                        finish()
                    current = piece.file
                    if "/" in current.name or current.name.startswith(".") or not current.name:
                        raise SqueezeError(grpc.StatusCode.DATA_LOSS,
                                           f"unsafe file name {current.name!r}")
                    partial = os.path.join(dest, f".{current.name}.partial")
                    out = open(partial, "wb")
                else:
                    out.write(piece.data)
        except grpc.RpcError as e:
            if out is not None:
                out.close()
                os.remove(partial)
            raise SqueezeError.from_rpc(e) from None
        if current is not None:
            finish()
        return written
