"""Quix Streams' PostgreSQLSink on the bars topic, as its documentation sets it up; run by
bench/peers/run.py with the virtualenv bench/peers/setup.sh makes (not the project's).

    python quix_sink.py BROKER TOPIC GROUP HOST PORT DBNAME USER TABLE

The sink writes the same typed table as `cie consume`, upserting on its primary key, with
the schema left alone (the table exists). Tuned: a checkpoint (one INSERT ... VALUES batch per
table, and the offset commit) every 10,000 messages or second, instead of the default
5 seconds, to match the batch size the comparison uses for every sink.
"""

import sys

from quixstreams import Application
from quixstreams.sinks.community.postgresql import PostgreSQLSink


def main() -> None:
    broker, topic_name, group, host, port, dbname, user, table = sys.argv[1:9]
    app = Application(broker_address=broker, consumer_group=group,
                      auto_offset_reset="earliest", commit_every=10_000, commit_interval=1.0)
    topic = app.topic(topic_name, value_deserializer="json", key_deserializer="str")
    sink = PostgreSQLSink(host=host, port=int(port), dbname=dbname, user=user, password="",
                          table_name=table, schema_auto_update=False, include_metadata=False,
                          primary_key_columns=["symbol", "timestamp"],
                          upsert_on_primary_key=True)
    app.dataframe(topic).sink(sink)
    app.run()


if __name__ == "__main__":
    main()
