"""The project's SQS client: its signer, its two wire protocols, and protocol detection.

Pure tests check the signer against botocore's ``SigV4Auth`` and the wire
formats against answers shaped as servers send them; the ``services`` tests
run the client against the stack's two real servers: the current ElasticMQ
(both protocols) and ElasticMQ 1.3.9 (query only, like the exercise's
LocalStack image).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotocoreCredentials

from bridge.sqs import json_protocol, query_protocol
from bridge.sqs.client import SqsClient
from bridge.sqs.endpoint import CredentialSource, Endpoint, aws_region_of, choose_endpoint
from bridge.sqs.errors import SqsRequestError, SqsUnavailable, redact
from bridge.sqs.json_protocol import JsonProtocol
from bridge.sqs.query_protocol import QueryProtocol, flatten
from bridge.sqs.signing import Credentials, sign
from bridge.sqs.wire import HttpAnswer, MalformedAnswer, ServerError
from tests.support.sqs import SqsServer, stack_servers

NOW = dt.datetime(2026, 12, 5, 21, 30, 15, tzinfo=dt.UTC)
QUEUE = "https://sqs.eu-west-1.amazonaws.com/123456789012/login-queue"


# -- the signer equals botocore's ----------------------------------------------------------


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEXAMPLE//token+with/odd=chars"])
@pytest.mark.parametrize("wire", [JsonProtocol(), QueryProtocol()], ids=["json", "query"])
@pytest.mark.parametrize(
    "endpoint",
    ["https://sqs.eu-west-1.amazonaws.com", "http://127.0.0.1:4566", "https://example.com:443"],
)
def test_signature_equals_botocore_sigv4(wire: Any, token: str | None, endpoint: str) -> None:
    params = {
        "QueueUrl": QUEUE,
        "Entries": [{"Id": "0", "MessageBody": '{"ip": "10.0.0.1", "é": "🚀 & <x>"}'}],
    }
    request = wire.encode(endpoint, "SendMessageBatch", params)
    keys = ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)

    ours = sign(
        "POST", request.url, request.headers, request.body, Credentials(*keys), "eu-west-1", NOW
    )

    theirs = AWSRequest(method="POST", url=request.url, data=request.body, headers=request.headers)
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        SigV4Auth(BotocoreCredentials(*keys), "sqs", "eu-west-1").add_auth(theirs)
    assert ours["Authorization"] == theirs.headers["Authorization"]
    assert ours["X-Amz-Date"] == theirs.headers["X-Amz-Date"]
    assert ours.get("X-Amz-Security-Token") == theirs.headers.get("X-Amz-Security-Token")


def test_signature_changes_with_the_day_and_the_key() -> None:
    keys = Credentials("AKID", "secret")
    first = sign("POST", "http://h/", {}, b"x", keys, "us-east-1", NOW)["Authorization"]
    next_day = sign("POST", "http://h/", {}, b"x", keys, "us-east-1", NOW + dt.timedelta(days=1))
    other_key = sign("POST", "http://h/", {}, b"x", Credentials("AKID", "other"), "us-east-1", NOW)
    assert len({first, next_day["Authorization"], other_key["Authorization"]}) == 3


def test_credentials_never_show_their_secret() -> None:
    text = repr(Credentials("AKID", "s3cr3t-value", "t0ken-value"))
    assert "s3cr3t-value" not in text and "t0ken-value" not in text


# -- endpoints -----------------------------------------------------------------------------


def test_endpoint_follows_the_queue_url_unless_one_is_configured() -> None:
    aws = Endpoint("https://sqs.us-east-1.amazonaws.com", "us-east-1")
    assert aws_region_of(QUEUE) == "eu-west-1"
    assert choose_endpoint(aws, False, QUEUE) == Endpoint(
        "https://sqs.eu-west-1.amazonaws.com", "eu-west-1"
    )
    local = "http://localhost:4566/000000000000/login-queue"
    assert choose_endpoint(aws, False, local) == Endpoint("http://localhost:4566", "us-east-1")
    configured = Endpoint("http://sqs:9324", "us-east-1")
    assert choose_endpoint(configured, True, local) == configured


# -- the query protocol's form and answers ---------------------------------------------------


def test_query_form_flattens_entries_lists_and_attribute_maps() -> None:
    fields = flatten(
        "SendMessageBatch",
        {
            "QueueUrl": "u",
            "Entries": [
                {
                    "Id": "0",
                    "MessageBody": "b",
                    "MessageGroupId": "g",
                    "MessageAttributes": {"trace": {"DataType": "String", "StringValue": "t"}},
                }
            ],
        },
    )
    assert fields == [
        ("Action", "SendMessageBatch"),
        ("Version", "2012-11-05"),
        ("QueueUrl", "u"),
        ("SendMessageBatchRequestEntry.1.Id", "0"),
        ("SendMessageBatchRequestEntry.1.MessageBody", "b"),
        ("SendMessageBatchRequestEntry.1.MessageGroupId", "g"),
        ("SendMessageBatchRequestEntry.1.MessageAttribute.1.Name", "trace"),
        ("SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType", "String"),
        ("SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue", "t"),
    ]
    receive = dict(flatten("ReceiveMessage", {"MessageSystemAttributeNames": ["A", "B"]}))
    assert receive["AttributeName.1"] == "A" and receive["AttributeName.2"] == "B"


RECEIVE_XML = b"""<?xml version="1.0"?>
<ReceiveMessageResponse xmlns="http://queue.amazonaws.com/doc/2012-11-05/">
  <ReceiveMessageResult>
    <Message>
      <MessageId>m-1</MessageId><ReceiptHandle>rh-1</ReceiptHandle><MD5OfBody>x</MD5OfBody>
      <Body>{&quot;ip&quot;: &quot;1.2.3.4&quot;, &quot;s&quot;: &quot;&lt;&amp;&gt;&quot;}</Body>
      <Attribute><Name>SentTimestamp</Name><Value>1700000000000</Value></Attribute>
      <Attribute><Name>ApproximateReceiveCount</Name><Value>2</Value></Attribute>
      <MessageAttribute><Name>trace</Name>
        <Value><StringValue>abc</StringValue><DataType>String</DataType></Value>
      </MessageAttribute>
    </Message>
  </ReceiveMessageResult>
  <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>
</ReceiveMessageResponse>"""


def test_query_answers_parse_into_the_json_shapes() -> None:
    answer = QueryProtocol().decode("ReceiveMessage", HttpAnswer(200, "text/xml", RECEIVE_XML))
    (message,) = answer["Messages"]
    assert message["Body"] == '{"ip": "1.2.3.4", "s": "<&>"}'
    assert message["Attributes"] == {
        "SentTimestamp": "1700000000000",
        "ApproximateReceiveCount": "2",
    }
    assert message["MessageAttributes"] == {"trace": {"StringValue": "abc", "DataType": "String"}}
    batch = b"""<DeleteMessageBatchResponse><DeleteMessageBatchResult>
      <DeleteMessageBatchResultEntry><Id>0</Id></DeleteMessageBatchResultEntry>
      <BatchResultErrorEntry><Id>1</Id><Code>ReceiptHandleIsInvalid</Code>
        <Message>bad</Message><SenderFault>true</SenderFault></BatchResultErrorEntry>
      </DeleteMessageBatchResult></DeleteMessageBatchResponse>"""
    decoded = QueryProtocol().decode("DeleteMessageBatch", HttpAnswer(200, "text/xml", batch))
    assert decoded["Successful"] == [{"Id": "0"}]
    assert decoded["Failed"] == [
        {"Id": "1", "Code": "ReceiptHandleIsInvalid", "Message": "bad", "SenderFault": True}
    ]


def test_errors_of_both_protocols_name_their_code() -> None:
    xml = b"""<ErrorResponse><Error><Type>Sender</Type>
        <Code>AWS.SimpleQueueService.NonExistentQueue</Code><Message>gone</Message></Error>
        </ErrorResponse>"""
    with pytest.raises(ServerError) as query_error:
        QueryProtocol().decode("GetQueueAttributes", HttpAnswer(400, "text/xml", xml))
    assert query_error.value.code == "AWS.SimpleQueueService.NonExistentQueue"
    body = b'{"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "gone"}'
    with pytest.raises(ServerError) as json_error:
        JsonProtocol().decode("GetQueueAttributes", HttpAnswer(400, "application/json", body))
    assert (json_error.value.code, json_error.value.message) == ("QueueDoesNotExist", "gone")
    with pytest.raises(MalformedAnswer):
        JsonProtocol().decode("ReceiveMessage", HttpAnswer(200, "text/xml", RECEIVE_XML))


# What query-only servers have been seen to answer a JSON request: none is "understood".
QUERY_ONLY_ANSWERS = [
    HttpAnswer(
        400, "text/xml", b"<ErrorResponse><Error><Code>MissingAction</Code></Error></ErrorResponse>"
    ),
    HttpAnswer(404, "text/html", b"<html><body>Not Found</body></html>"),
    HttpAnswer(200, "text/xml", b"<ListQueuesResponse><ListQueuesResult/></ListQueuesResponse>"),
    HttpAnswer(500, "application/json", b'{"__type": "InternalFailure", "message": "boom"}'),
    HttpAnswer(400, "application/json", b'{"__type": "UnknownOperationException"}'),
    HttpAnswer(200, "text/plain", b"OK"),
    HttpAnswer(502, "text/html", b""),
]


@pytest.mark.parametrize("answer", QUERY_ONLY_ANSWERS)
def test_a_query_only_answer_is_not_taken_for_json(answer: HttpAnswer) -> None:
    assert not json_protocol.understood(answer)


def test_json_answers_and_json_errors_mean_json() -> None:
    assert json_protocol.understood(
        HttpAnswer(200, "application/x-amz-json-1.0", b'{"Attributes": {}}')
    )
    denied = b'{"__type": "com.amazon.coral.service#AccessDeniedException", "message": "no"}'
    assert json_protocol.understood(HttpAnswer(400, "application/x-amz-json-1.0", denied))
    ok = b"<GetQueueAttributesResponse><GetQueueAttributesResult/></GetQueueAttributesResponse>"
    assert query_protocol.understood(HttpAnswer(200, "text/xml", ok), "GetQueueAttributes")
    assert not query_protocol.understood(HttpAnswer(200, "text/xml", ok), "ListQueues")


def test_error_texts_never_carry_receipt_handles_or_bodies() -> None:
    handle = "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a"
    text = redact(f'The receipt handle "{handle}" is not valid.', [handle])
    assert handle not in text and "not valid" in text


# -- against the stack's two servers -------------------------------------------------------


@pytest.fixture(params=["json", "query"])
def server(request: pytest.FixtureRequest, stack_env: dict[str, str]) -> SqsServer:
    return stack_servers(stack_env)[request.param]


def auto_client(server: SqsServer, queue_url: str = "", **options: Any) -> SqsClient:
    return SqsClient(
        Endpoint(server.endpoint, "us-east-1"),
        CredentialSource.static("local", "local"),
        probe_queue_url=queue_url,
        **options,
    )


@pytest.mark.services
def test_auto_picks_json_on_elasticmq_and_query_on_the_query_only_server(
    server: SqsServer,
) -> None:
    async def detected(queue_url: str, probe_queue_url: str) -> str | None:
        async with auto_client(server, probe_queue_url) as client:
            name = queue_url.rpartition("/")[2]
            assert await client.get_queue_url(name) == queue_url
            return client.protocol

    with server.queue("detect") as url:
        assert asyncio.run(detected(url, url)) == server.protocol
        assert asyncio.run(detected(url, "")) == server.protocol  # probe by ListQueues


@pytest.mark.services
def test_round_trip_keeps_bodies_and_attributes_exact(server: SqsServer) -> None:
    bodies = ['{"ip": "10.1.2.3", "s": "<&>\\"\'"}', "José 🚀 \t tab", "not json", " x "]
    attributes = {
        "trace": {"DataType": "String", "StringValue": "t-1"},
        "n": {"DataType": "Number", "StringValue": "42"},
        "raw": {"DataType": "Binary", "BinaryValue": "AAEC/w=="},
    }

    async def go(url: str) -> list[dict[str, Any]]:
        async with auto_client(server, url) as client:
            entries = [
                {"Id": str(i), "MessageBody": b, "MessageAttributes": attributes}
                for i, b in enumerate(bodies)
            ]
            assert not (await client.send_message_batch(url, entries)).get("Failed")
            received: list[dict[str, Any]] = []
            while len(received) < len(bodies):
                batch = await client.receive_message(url, 10, 1, 30, ("SentTimestamp",))
                received += batch
            hidden = await client.change_message_visibility_batch(
                url, [m["ReceiptHandle"] for m in received], 60
            )
            assert not hidden.get("Failed")
            deleted = await client.delete_message_batch(url, [m["ReceiptHandle"] for m in received])
            assert not deleted.get("Failed")
            return received

    with server.queue("round-trip") as url:
        received = asyncio.run(go(url))
        assert server.depth(url) == 0
    assert sorted(m["Body"] for m in received) == sorted(bodies)
    for message in received:
        assert int(message["Attributes"]["SentTimestamp"]) > 0
        values = message["MessageAttributes"]
        assert values["trace"]["StringValue"] == "t-1"
        assert values["n"]["StringValue"] == "42"
        assert values["raw"]["BinaryValue"] == b"\x00\x01\x02\xff"


@pytest.mark.services
def test_refused_requests_raise_at_once_without_receipt_handles(server: SqsServer) -> None:
    async def go(url: str) -> None:
        async with auto_client(server, url) as client:
            failed = await client.delete_message_batch(url, ["not-a-handle-0123456789"])
            (entry,) = failed["Failed"]
            assert "not-a-handle-0123456789" not in entry["Message"]
            with pytest.raises(SqsRequestError) as missing:
                await client.get_queue_attributes(url + "-missing")
            assert (
                "NonExistentQueue" in missing.value.code
                or "QueueDoesNotExist" in missing.value.code
            )

    with server.queue("refused") as url:
        asyncio.run(go(url))


def test_unreachable_servers_are_unavailable_not_refused() -> None:
    async def go() -> None:
        client = SqsClient(
            Endpoint("http://127.0.0.1:1", "us-east-1"),
            CredentialSource.static("local", "local"),
            retries=1,
            backoff_base=0.01,
        )
        async with client:
            with pytest.raises(SqsUnavailable):
                await client.get_queue_attributes("http://127.0.0.1:1/000000000000/q")

    asyncio.run(go())
