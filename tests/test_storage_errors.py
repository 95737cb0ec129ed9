"""Which store errors an upload retries: transient ones only; a missing bucket or a refused key is final,
however the client library spells it."""

from __future__ import annotations

import pytest

from curation import storage


@pytest.mark.parametrize("message", [
    "When initiating multiple part upload for key 'k' in bucket 'b': AWS Error NO_SUCH_BUCKET during "
    "CreateMultipartUpload operation: The specified bucket does not exist",
    "AWS Error ACCESS_DENIED during PutObject operation: Access Denied",
    "AWS Error INVALID_ACCESS_KEY_ID during PutObject operation: The AWS Access Key Id you provided does not exist",
    "An error occurred (NoSuchBucket) when calling the PutObject operation",
    "An error occurred (SignatureDoesNotMatch) when calling the PutObject operation",
])
def test_final_errors_are_not_retried(message: str) -> None:
    assert not storage._transient(OSError(message))


@pytest.mark.parametrize("message", [
    "AWS Error NETWORK_CONNECTION during PutObject operation: curlCode: 7, Couldn't connect to server",
    "AWS Error SLOW_DOWN during UploadPart operation: Please reduce your request rate.",
    "AWS Error INTERNAL_FAILURE during CompleteMultipartUpload operation",
])
def test_transient_errors_are_retried(message: str) -> None:
    assert storage._transient(OSError(message))


def test_a_final_error_is_raised_at_the_first_attempt() -> None:
    calls = []

    def upload() -> None:
        calls.append(1)
        raise OSError("AWS Error NO_SUCH_BUCKET during PutObject operation: The specified bucket does not exist")

    with pytest.raises(storage.StorageError, match="bucket does not exist"):
        storage._retry(upload, "s3://missing/key", "upload it")
    assert calls == [1]


@pytest.mark.parametrize("message, hint", [
    # a closed port whose number holds "403": a connection failure, not a refusal (seen in a test run)
    ("When listing objects under key 'in/' in bucket 'b': AWS Error NETWORK_CONNECTION during ListObjectsV2 "
     "operation: curlCode: 7, Could not connect to server; Details: Failed to connect to 127.0.0.1:54031", "reachable"),
    ("AWS Error UNKNOWN (HTTP status 403) during HeadObject operation: No response body.", "credentials"),
    ("AWS Error ACCESS_DENIED during PutObject operation: Access Denied", "credentials"),
    ("An error occurred (NoSuchBucket) when calling the PutObject operation", "bucket exist"),
])
def test_the_hint_names_the_likely_cause(message: str, hint: str) -> None:
    assert hint in storage._hint(message)
