"""What a record on ``logins.raw`` carries: its SQS headers and its size limit.

The bridge writes these records and the workers read them (as may any other
producer's records, which the workers accept too), so both sides take the
names and the limit from here.
"""

# Header names the bridge writes on every raw record.
HEADER_MESSAGE_ID = "sqs_message_id"
HEADER_SENT_TIMESTAMP = "sqs_sent_timestamp"
HEADER_RECEIVE_COUNT = "sqs_receive_count"

# The largest body SQS accepts (1 MiB on AWS since 2025). Every message SQS
# accepts must fit the raw topic, so the raw record's limit adds room for its
# key (16 bytes), its headers (a message id, two numbers) and the framing of
# a record batch that holds it alone.
MAX_SQS_BODY_BYTES = 1_048_576
MAX_RAW_RECORD_BYTES = MAX_SQS_BODY_BYTES + 16 * 1024
