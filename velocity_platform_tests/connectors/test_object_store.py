"""The lake's way into an S3-compatible bucket: from the environment, commits by conditional put,
errors that name the variable and never the secret."""

import pytest

from velocity_platform.connectors.object_store import ObjectStoreError, S3Lake, check_lake_uri
from velocity_platform.settings import Settings

KEYS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3cr3t'quote"}


@pytest.fixture
def no_aws(monkeypatch):
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_a_bucket_without_keys_names_the_variables_it_needs(no_aws):
    with pytest.raises(ObjectStoreError, match="needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        S3Lake("s3://lake/warehouse").storage_options()
    no_aws.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    with pytest.raises(ObjectStoreError, match="needs AWS_SECRET_ACCESS_KEY in the environment"):
        S3Lake("s3://lake/warehouse").storage_options()


def test_commits_are_conditional_puts_and_http_only_where_the_endpoint_says(no_aws):
    for variable, value in KEYS.items():
        no_aws.setenv(variable, value)
    on_aws = S3Lake("s3://lake/warehouse").storage_options()
    assert on_aws["conditional_put"] == "etag" and on_aws["AWS_REGION"] == "us-east-1"
    assert "AWS_ENDPOINT_URL" not in on_aws and "AWS_S3_ALLOW_UNSAFE_RENAME" not in on_aws
    no_aws.setenv("AWS_ENDPOINT_URL", "http://minio.internal:9000")
    no_aws.setenv("AWS_REGION", "eu-west-2")
    on_minio = S3Lake("s3://lake/warehouse").storage_options()
    assert (on_minio["AWS_ALLOW_HTTP"], on_minio["AWS_REGION"]) == ("true", "eu-west-2")


def test_duckdbs_secret_is_scoped_to_the_bucket_and_quotes_the_key(no_aws):
    for variable, value in {**KEYS, "AWS_ENDPOINT_URL": "https://objects.example:443"}.items():
        no_aws.setenv(variable, value)
    sql = S3Lake("s3://lake/warehouse").duckdb_secret_sql()
    assert "SECRET 's3cr3t''quote'" in sql and "SCOPE 's3://lake'" in sql
    assert "ENDPOINT 'objects.example:443'" in sql and "USE_SSL true" in sql and "URL_STYLE 'path'" in sql


@pytest.mark.parametrize(
    ("uri", "message"),
    [("gs://lake/warehouse", "gs:// is not supported"), ("s3:///warehouse", "name the bucket")],
)
def test_a_lake_uri_the_platform_cannot_commit_to_is_refused_in_one_line(uri, message, no_aws, tmp_path):
    with pytest.raises(ObjectStoreError, match=message):
        check_lake_uri(uri)
    no_aws.setenv("VELOCITY_STATE_DIR", str(tmp_path))
    no_aws.setenv("VELOCITY_LAKE_PATH", uri)
    with pytest.raises(ValueError, match=message):
        Settings.from_env()


def test_an_s3_lake_is_a_setting_and_its_keys_are_not(no_aws, tmp_path):
    for variable, value in KEYS.items():
        no_aws.setenv(variable, value)
    no_aws.setenv("VELOCITY_STATE_DIR", str(tmp_path))
    no_aws.setenv("VELOCITY_LAKE_PATH", "s3://lake/warehouse")
    settings = Settings.from_env()
    assert settings.lake_path == "s3://lake/warehouse"
    assert KEYS["AWS_SECRET_ACCESS_KEY"] not in repr(settings) and KEYS["AWS_SECRET_ACCESS_KEY"] not in settings.model_dump_json()
