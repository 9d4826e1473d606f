"""What a record on ``logins.raw`` carries: its SQS headers and its size limit.

The bridge writes these records and the workers read them (as may any other
producer's records, which the workers accept too), so both sides take the
names and the limit from here.
"""

# Header names the bridge writes on every raw record.
HEADER_MESSAGE_ID = "sqs_message_id"
HEADER_SENT_TIMESTAMP = "sqs_sent_timestamp"
HEADER_RECEIVE_COUNT = "sqs_receive_count"
# FIFO queues only: the message's group and deduplication id.
HEADER_GROUP_ID = "sqs_group_id"
HEADER_DEDUPLICATION_ID = "sqs_deduplication_id"
# Each SQS message attribute travels as a header of this prefix and its name;
# String and Number values as UTF-8, Binary as its bytes. A type other than
# String is named in a second header (e.g. "Number", "Binary", "String.trace").
HEADER_ATTRIBUTE_PREFIX = "sqs_attr."
HEADER_ATTRIBUTE_TYPE_PREFIX = "sqs_attr_type."

# The largest body SQS accepts (1 MiB on AWS since 2025). Every message SQS
# accepts must fit the raw topic, so the raw record's limit adds room for its
# key (16 bytes), its headers (a message id, two numbers, the FIFO ids, and
# the names of at most ten message attributes, whose values count towards the
# SQS limit) and the framing of a record batch that holds it alone.
MAX_SQS_BODY_BYTES = 1_048_576
MAX_RAW_RECORD_BYTES = MAX_SQS_BODY_BYTES + 16 * 1024
