"""maskstream's own asyncio SQS client: both wire protocols, SigV4, no threads.

- :mod:`bridge.sqs.client`: :class:`SqsClient`, the calls and protocol detection;
- :mod:`bridge.sqs.queue`: :class:`SqsQueue`, the forwarder's port for one queue;
- :mod:`bridge.sqs.json_protocol`, :mod:`bridge.sqs.query_protocol`: the two wire formats;
- :mod:`bridge.sqs.signing`: SigV4 as a pure function;
- :mod:`bridge.sqs.endpoint`: credentials, region and endpoint from botocore;
- :mod:`bridge.sqs.errors`: what is worth retrying and what is not.
"""
