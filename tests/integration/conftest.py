"""Integration fixtures: the real services, and ways to run the collection's modules and playbooks."""

import http.server
import json
import threading

import boto3
import pytest
import services
from harness import module_env
from pyrage import x25519


@pytest.fixture(scope="session")
def svc(tmp_path_factory):
    """The four services, started once for the session in a fresh state directory, stopped at the end."""
    state = tmp_path_factory.mktemp("services")
    env = services.up(state)
    yield env
    services.down(state)


@pytest.fixture()
def s3(svc):
    """A boto3 client for the session's S3 server."""
    return services.s3_client(svc["CAAS_S3_ENDPOINT"])


@pytest.fixture()
def s3_url(svc, request):
    """A storage URL of its own for each test, inside the session's bucket."""
    return f"s3://{svc['CAAS_S3_BUCKET']}/{request.node.name.replace('[', '-').replace(']', '')}"


@pytest.fixture(scope="session")
def age_key(tmp_path_factory):
    """An age identity in a 0600 file, and its public key."""
    identity = x25519.Identity.generate()
    path = tmp_path_factory.mktemp("age") / "key.txt"
    path.write_text(f"{identity}\n")
    path.chmod(0o600)
    return {"identity": str(identity), "recipient": str(identity.to_public()), "file": str(path)}


@pytest.fixture()
def locked_down_s3(tmp_path):
    """A second S3 server that checks credentials: returns (endpoint, good access key, good secret key)."""
    handle = services.start_s3(tmp_path / "s3-auth", unauthenticated_requests=4)
    try:
        anyone = dict(
            endpoint_url=handle.url, aws_access_key_id="setup", aws_secret_access_key="setup", region_name="us-east-1"
        )
        iam = boto3.client("iam", **anyone)
        iam.create_user(UserName="backup")
        key = iam.create_access_key(UserName="backup")["AccessKey"]
        iam.put_user_policy(
            UserName="backup",
            PolicyName="s3",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
            ),
        )
        boto3.client(
            "s3",
            endpoint_url=handle.url,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            region_name="us-east-1",
        ).create_bucket(Bucket="locked")
        yield handle.url, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        handle.stop()


@pytest.fixture()
def env(svc):
    """Module environment without a MongoDB URI: every test says which server it means."""
    out = module_env(svc)
    for key in ("CAAS_MONGO_URI", "MONGO_URI", "CAAS_MONGO_PASSWORD", "MONGO_PASSWORD"):
        out.pop(key, None)
    return out


@pytest.fixture()
def mongo_server(tmp_path):
    """Start SecantusDB servers for one test (a source, an empty restore target, auth, TLS); stopped at its end."""
    handles = []

    def start(name="target", **options):
        handle = services.start_mongo(tmp_path / name, **options)
        handles.append(handle)
        return handle

    yield start
    services.stop_pids([(h.pid, h.started) for h in handles])


@pytest.fixture()
def broker(tmp_path):
    """Starts fresh Tansu brokers (memory storage) for the test; stops the ones still running after it."""
    started = []

    def start():
        handle = services.start_kafka(tmp_path / f"kafka-{len(started)}")
        started.append(handle)
        return handle

    yield start
    for handle in started:
        if handle.alive:
            handle.stop()


@pytest.fixture()
def file_url(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    return f"file://{store}"


@pytest.fixture()
def webhook():
    """An HTTP server that records each POST (body and headers) and answers with a chosen status."""
    received = []
    status = {"code": 204}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"body": json.loads(body), "headers": dict(self.headers)})
            self.send_response(status["code"])
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received, status
    server.shutdown()
