"""Video jobs under ``/api/v1``: upload a clip (202 and a job id), follow its progress,
fetch the depth video (and the 16-bit depth zip), cancel or delete.

The upload is streamed straight into the job's folder (never held in memory whole), once the queue has
a place for it and the folder's byte budget and disk have room for it (nothing is written otherwise); it
is deleted as soon as the job ends, and the results ``VIDEO_JOB_TTL`` seconds later (or at once with
``DELETE``). Jobs go through the task queue of ``app.serving.jobs`` (``app.extensions["video_jobs"]``), so any
process sharing its storage answers for any job.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path
from typing import IO, Any, Dict, Mapping, NoReturn, Optional

from flask import Blueprint, Flask, Response, current_app, jsonify, request, send_file, url_for
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from ..serving.jobdata import NoRoom, is_full, is_job_id
from ..serving.jobs import (DONE, FAILED, FINISHED, UPLOAD, Job, QueueFull, QueueUnavailable, VideoJobs,
                            from_settings)
from ..options import Options, VideoOptions
from ..serving.service import safe_stem
from ..imaging.video import probe
from .errors import ApiError, answer
from .reading import depth_service, read_options

log = logging.getLogger(__name__)

bp = Blueprint("video", __name__, url_prefix="/api/v1")

VIDEO_FIELD = "video"
FILE_ENDPOINTS = {"video": "video.job_result", "depth_zip": "video.job_zip"}  # a job's files
VIDEO_OPTION_NAMES = frozenset(VideoOptions.names())


def init_app(app: Flask) -> None:
    """The job manager and the routes."""
    app.extensions["video_jobs"] = from_settings(app.config, lambda: app.extensions["depth_models"])
    app.register_blueprint(bp)
    # the queue's storage down (Redis stopped, the SQLite file locked too long): 503, and the next
    # request connects again
    app.register_error_handler(QueueUnavailable, lambda exc: answer(
        ApiError("store_unavailable", exc.message, retry_after=exc.retry_after)))

    video_meta = {f.name: f.metadata for f in fields(VideoOptions)}
    option_names = list(Options.names()) + sorted(VIDEO_OPTION_NAMES)

    @app.context_processor
    def video_template_values() -> Dict[str, Any]:
        # what templates/video_controls.html and video_results.html show
        return {"video_meta": video_meta, "video_opts": VideoOptions(), "video_option_names": option_names,
                "video_max_bytes": app.config["VIDEO_MAX_CONTENT_LENGTH"]}


def jobs() -> VideoJobs:
    manager: VideoJobs = current_app.extensions["video_jobs"]
    if current_app.config["EMBEDDED_WORKER"]:
        manager.start_embedded()  # at once if this process runs it; else one flock attempt (microseconds)
    return manager


def _too_large(limit: int) -> ApiError:
    return ApiError("too_large",
                    f"The upload is larger than this server's video limit of {limit / 2**20:g} MB.")


def _busy(exc: QueueFull) -> ApiError:
    return ApiError("busy", "The server is processing as many videos as it queues; try again in about "
                    f"{exc.retry_after} s.", retry_after=exc.retry_after)


def _no_room(exc: NoRoom) -> ApiError:
    if not exc.ever:
        return ApiError("too_large", exc.message)
    return ApiError("storage_full", f"{exc.message} Try again in about {exc.retry_after} s.",
                    retry_after=exc.retry_after)


DISK_FULL = NoRoom("The video folder's disk is full: the upload could not be stored, and nothing of it "
                   "was kept.", retry_after=60)


# upload -----------------------------------------------------------------------------------------------

def _receive(workdir: Path) -> tuple[Path, str, Dict[str, str]]:
    """The multipart body, its one file in ``video`` written into ``workdir`` as it arrives; returns
    (path, safe stem, the other form fields)."""
    limit = current_app.config["VIDEO_MAX_CONTENT_LENGTH"]
    request.max_content_length = limit
    opened: list = []

    def to_disk(total_content_length: Optional[int], content_type: Optional[str],
                filename: Optional[str] = None, content_length: Optional[int] = None) -> IO[bytes]:
        opened.append(open(workdir / f"upload-{len(opened) + 1}", "w+b"))  # noqa: SIM115 - closed below
        return opened[-1]

    parser = FormDataParser(stream_factory=to_disk, max_content_length=limit,
                            max_form_memory_size=request.max_form_memory_size,
                            max_form_parts=request.max_form_parts)
    try:
        _, form, files = parser.parse(request.stream, request.mimetype, request.content_length,
                                      request.mimetype_params)
    except BaseException as exc:  # a full disk included: no file stays open
        for f in opened:
            f.close()
        if isinstance(exc, RequestEntityTooLarge):
            raise _too_large(limit) from None
        raise
    try:
        uploads = files.getlist(VIDEO_FIELD)
        if not uploads:
            hint = " (photos go to /api/v1/depth)" if "image" in files else ""
            raise ApiError("missing_file", f"No video was sent: put it in the form field 'video'{hint}.")
        if len(uploads) > 1:
            raise ApiError("too_many_files", f"Send one video per request (got {len(uploads)} in 'video').")
        upload = uploads[0]
        path = Path(upload.stream.name)  # type: ignore[attr-defined]
        name = safe_stem(upload.filename)
        if name == "photo":
            name = "video"
    finally:
        for _, storage in files.items(multi=True):
            storage.close()
    return path, name, dict(form.items())


def read_video_options(values: Mapping[str, Any]) -> tuple[Options, VideoOptions]:
    """Image options and video options from one set of form fields; unknown names are an error."""
    video = {k: v for k, v in values.items() if k in VIDEO_OPTION_NAMES}
    opts = read_options({k: v for k, v in values.items() if k not in VIDEO_OPTION_NAMES}, strict=True)
    return opts, VideoOptions.from_strings(video)


def _admit(manager: VideoJobs) -> tuple[str, Path]:
    """A job id and its folder for this upload, once the queue has a place and the budget and the disk
    have room for the whole body: refused (503 ``busy``, 507 ``storage_full``) before anything is
    written."""
    limit = current_app.config["VIDEO_MAX_CONTENT_LENGTH"]
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    if request.mimetype != "multipart/form-data":
        raise ApiError("unsupported_type", "Send the video as multipart/form-data in the field 'video'.")
    size = request.content_length
    if size is None:  # a chunked body: its size is known once read, and it may take up to the limit
        size = min(limit, manager.room.max_bytes or limit)
    try:
        manager.admit(size)
        return manager.new_workdir(reserve=size)
    except QueueFull as exc:
        raise _busy(exc) from None
    except NoRoom as exc:
        raise _no_room(exc) from None
    except OSError as exc:  # the file system refused even the folder (no inodes left)
        if not is_full(exc):
            raise
        raise _no_room(DISK_FULL) from None


def _queue(manager: VideoJobs, job_id: str, workdir: Path) -> Job:
    """The upload received into ``workdir``, checked, and queued as job ``job_id``."""
    received, name, form = _receive(workdir)
    src = received.rename(workdir / UPLOAD)
    manager.release(workdir)
    opts, vopts = read_video_options(form)
    depth_service().model_for(opts)  # a model this server does not load: 422 now, not a failed job
    info = probe(src, manager.limits)  # the consumer holds every frame to the same limits
    job_info = {"name": name, "input": info.as_dict(), "options": opts.as_dict(),
                "video_options": vopts.as_dict()}
    spec = {"options": opts.as_dict(), "video_options": vopts.as_dict()}
    try:
        return manager.submit(job_id, name, spec, job_info)
    except QueueFull as exc:
        raise _busy(exc) from None


@bp.post("/video")
def submit() -> Any:
    """Multipart ``video`` plus options -> 202 and the job (``Location``: its URL)."""
    manager = jobs()
    job_id, workdir = _admit(manager)
    try:
        job = _queue(manager, job_id, workdir)
    except OSError as exc:  # the disk filled up under the upload: nothing of it is kept
        manager.discard(workdir)
        if not is_full(exc):
            raise
        raise _no_room(DISK_FULL) from None
    except BaseException:
        manager.discard(workdir)
        raise
    response = jsonify(_job_json(job))
    response.status_code = 202
    response.headers["Location"] = url_for("video.job_status", job_id=job.id)
    return response


# jobs -----------------------------------------------------------------------------------------------------

def _job(job_id: str) -> Job:
    job = jobs().get(job_id) if is_job_id(job_id) else None  # junk never reaches the queue's storage
    if job is None:
        raise ApiError("no_job", "No such job: the id is wrong, or the job ended more than "
                       f"{current_app.config['VIDEO_JOB_TTL']:g} s ago and its files were deleted.")
    return job


def _job_json(job: Job) -> Dict[str, Any]:
    body = job.as_dict()
    if job.state == DONE:
        body["result"] = {**(body["result"] or {}), "files": {
            kind: url_for(FILE_ENDPOINTS[kind], job_id=job.id) for kind in job.files}}
    expires = jobs().expires_in(job)
    if expires is not None:
        body["expires_in_s"] = round(expires, 1)
    return body


@bp.get("/jobs/<job_id>")
def job_status(job_id: str) -> Any:
    """State (queued, running, done, failed, cancelled), progress, time left, errors, result URLs."""
    return jsonify(_job_json(_job(job_id)))


def _not_ready(job: Job) -> NoReturn:
    if job.state == FAILED and job.error:
        raise ApiError("job_failed", f"The job failed: {job.error['message']}")
    if job.state in FINISHED:
        raise ApiError("job_cancelled", "The job was cancelled; it has no result.")
    raise ApiError("not_ready", f"The job is {job.state}; the result is not ready yet.")


def _send(job: Job, kind: str, mimetype: str) -> Response:
    if job.state != DONE:
        _not_ready(job)
    if kind not in job.files:
        raise ApiError("not_found", "This job made no depth zip: ask for it with depth_zip=on.")
    path = jobs().path(job, kind)
    if path is None:  # its record names a file that is not a plain file in the job's folder
        log.warning("job %s: its %s file is missing or not in its folder", job.id, kind)
        raise ApiError("not_found", "This job's file is gone.")
    # conditional: Range requests, so a <video> can seek and a download can resume
    return send_file(path, mimetype=mimetype, conditional=True, download_name=path.name,
                     as_attachment=bool(request.args.get("download")), max_age=0)


@bp.get("/jobs/<job_id>/result")
def job_result(job_id: str) -> Response:
    """The depth video (H.264 MP4); ``download=1`` for an attachment."""
    return _send(_job(job_id), "video", "video/mp4")


@bp.get("/jobs/<job_id>/depth.zip")
def job_zip(job_id: str) -> Response:
    """The 16-bit depth PNGs and frames.csv, if the job was asked for them (``depth_zip=on``)."""
    return _send(_job(job_id), "depth_zip", "application/zip")


@bp.delete("/jobs/<job_id>")
def job_delete(job_id: str) -> Any:
    """A queued or running job is cancelled (202 with its state); an ended one is deleted with its
    files (204)."""
    job = _job(job_id)
    if job.state in FINISHED:
        jobs().remove(job_id)
        return "", 204
    job = jobs().cancel(job_id) or job
    response = jsonify(_job_json(job))
    response.status_code = 202
    return response
