"""What ``maskstream status`` shows: gathered in one place, formatted in another.

An operator asks one question: is data moving, and if not, where is it stuck?
The answer spans three services, so a snapshot reads each of them at once:

- SQS: messages waiting, in flight (received, not yet deleted by the bridge)
  and in the dead-letter queue named by the queue's ``RedrivePolicy``
  (:mod:`.sqs_depth`);
- Kafka: the workers' consumer group lag, per partition, on the pipeline's
  topics (what the workers have not processed yet) (:mod:`.kafka_lag`);
- PostgreSQL: rows, rejections (top reasons), distinct masked devices, and
  the ingest rate (:mod:`.postgres_counts`).

A service that cannot be asked becomes a :class:`.figures.Problem`, shown on
its own line, while the others are still shown: status is most needed when
something is down (:mod:`.reasons` turns an exception into a few words).
:mod:`.collect` asks the three services concurrently, each bounded by a short
timeout, so an unreachable one costs a few seconds at most, and returns plain
data (:mod:`.figures`). :mod:`.render` turns that data into text without any
I/O, so the screen is tested without any server; :mod:`.watch` redraws it.
"""
