"""AWS as deployed, in miniature: S3 over HTTP for pyarrow, the Glue catalog, and IAM principals.

- **S3 over HTTP.** pyarrow's S3 filesystem (which pyiceberg writes and reads Iceberg files with) does not
  go through botocore, so ``mock_aws`` cannot intercept it. :func:`s3_server` starts moto's
  ``ThreadedMotoServer`` in this process: it serves the same in-memory backends as ``mock_aws``, and
  both boto3 and pyarrow reach it through the ``s3.endpoint`` / ``ICEGATE_S3_ENDPOINT`` setting.
- **Glue.** pyiceberg's own Glue catalog against moto's Glue (in-process), with the database created
  as the stack creates it (:func:`create_glue_database`).
- **IAM.** :func:`principal_policy` turns the statements of a function's role, as synthesised, into the
  policy of an IAM user in moto; :func:`enforce_iam` switches moto's enforcement on, and
  :func:`acting_as` runs code with that user's access key, as Lambda runs a handler with its role's.
  moto checks S3 actions against the bucket/key ARN of the request, but every other service's actions
  only against ``*`` (``ActionAuthenticatorMixin._authenticate_and_authorize_normal_action``), so S3
  statements keep their exact resources while Glue's (and Logs', X-Ray's) are checked by action only;
  their resources are asserted on the template in ``tests/infra/test_infra_iam.py``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import settings as moto_settings
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
#: moto's default account.
ACCOUNT = "123456789012"
#: What the stack's templates say instead of the account's pseudo parameters.
_PSEUDO = {"<AWS::Partition>": "aws", "<AWS::Region>": REGION, "<AWS::AccountId>": ACCOUNT}


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's server on a free local port; yields its endpoint URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def glue_properties(s3_endpoint: str) -> dict[str, str]:
    """pyiceberg properties of a Glue catalog whose files live behind ``s3_endpoint``.

    The region is given so that pyiceberg does not ask real S3 where the bucket is.
    """
    return {"type": "glue", "s3.endpoint": s3_endpoint, "s3.region": REGION}


def create_glue_database(glue: Any, name: str, lake_bucket: str) -> None:
    """The database as ``cdk/catalog_construct.py`` creates it: tables go under ``warehouse/<name>.db``."""
    glue.create_database(DatabaseInput={"Name": name, "LocationUri": f"s3://{lake_bucket}/warehouse/{name}.db"})


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    secret_access_key: str


def principal_policy(statements: list[dict[str, Any]], buckets: Mapping[str, str]) -> dict[str, Any]:
    """A role's statements (as ``Synth.function_statements`` renders them) as a policy for moto.

    ``buckets`` maps the template's bucket ARN (``<LakeBucket….Arn>``) to the test's bucket name. S3
    resources are kept exactly (with the test's bucket names); statements of other services get
    ``*``, the only resource moto checks them against.
    """
    policy: list[dict[str, Any]] = []
    for statement in statements:
        assert not statement.get("Condition"), f"conditions are not translated: {statement}"
        actions = list(statement["Action"])
        s3_actions = [a for a in actions if a.startswith("s3:")]
        if s3_actions:
            assert s3_actions == actions, f"a statement mixing S3 with other services: {statement}"
            resources = [_s3_resource(resource, buckets) for resource in statement["Resource"]]
        else:
            resources = ["*"]
        policy.append({"Effect": statement["Effect"], "Action": actions, "Resource": resources})
    return {"Version": "2012-10-17", "Statement": policy}


def _s3_resource(rendered: str, buckets: Mapping[str, str]) -> str:
    resource = rendered
    for token, bucket in buckets.items():
        resource = resource.replace(token, f"arn:aws:s3:::{bucket}")
    for token, value in _PSEUDO.items():
        resource = resource.replace(token, value)
    assert "<" not in resource, f"unresolved reference in {rendered!r}"
    return resource


def create_principal(iam: Any, name: str, policy: Mapping[str, Any]) -> AccessKey:
    """An IAM user in moto holding exactly ``policy`` (inline), and an access key of it."""
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return AccessKey(key["AccessKeyId"], key["SecretAccessKey"])


#: Everything, on everything: for the test's own setup and assertions once IAM is enforced.
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def enforce_iam(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, every request to moto must be signed by a known principal and allowed by its policies.

    moto reads ``INITIAL_NO_AUTH_ACTION_COUNT`` at call time, for in-process mocks and its server alike.
    """
    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)


@contextmanager
def acting_as(key: AccessKey) -> Iterator[None]:
    """Run with ``key`` as the process's credentials, as Lambda gives a handler its role's credentials.

    boto3's default session caches the credentials it resolved first, so it is dropped on the way in
    and out; pyiceberg makes a new session (Glue) and a new pyarrow filesystem (S3) per catalog, and
    both read the environment. The stages' cached storage client is dropped too.
    """
    from stages._powertools import storage

    saved = {name: os.environ.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = key.access_key_id
    os.environ["AWS_SECRET_ACCESS_KEY"] = key.secret_access_key
    boto3.DEFAULT_SESSION = None
    storage.cache_clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        boto3.DEFAULT_SESSION = None
        storage.cache_clear()
