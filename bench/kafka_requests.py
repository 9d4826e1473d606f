"""The requests each broker has handled, by type, as Kafka itself counts them.

A broker's CPU per message is noisy on a shared machine (identical runs
differ by a third), while the requests it answers per message are not, and
on three replicas its cost is per request far more than per byte. So
``bench brokers`` also reports requests per message by type, read from the
brokers' own meters (``kafka.network:type=RequestMetrics,name=RequestsPerSec``,
the ``Count`` of each ``request=``).

The meters live in JMX. Each broker gets a JMX agent on a loopback port at
run time (``jcmd <pid> ManagementAgent.start``, in the JDK that runs it), and
a small Java program, run from source by the same JDK, sums the counts over
the nodes and prints them as ``name count`` lines.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from stream.common.ports import any_free_port

PROGRAM = """
import javax.management.MBeanServerConnection;
import javax.management.ObjectName;
import javax.management.remote.JMXConnectorFactory;
import javax.management.remote.JMXServiceURL;
import java.util.TreeMap;

public class RequestCounts {
    public static void main(String[] ports) throws Exception {
        TreeMap<String, Long> counts = new TreeMap<>();
        ObjectName meters = new ObjectName(
            "kafka.network:type=RequestMetrics,name=RequestsPerSec,*");
        for (String port : ports) {
            JMXServiceURL url = new JMXServiceURL(
                "service:jmx:rmi:///jndi/rmi://127.0.0.1:" + port + "/jmxrmi");
            try (var connector = JMXConnectorFactory.connect(url)) {
                MBeanServerConnection server = connector.getMBeanServerConnection();
                for (ObjectName name : server.queryNames(meters, null)) {
                    long count = (Long) server.getAttribute(name, "Count");
                    counts.merge(name.getKeyProperty("request"), count, Long::sum);
                }
            }
        }
        counts.forEach((request, count) -> System.out.println(request + " " + count));
    }
}
"""


# A bench on loopback: the agent listens on 127.0.0.1 only.
NO_SECURITY = ["jmxremote.authenticate=false", "jmxremote.ssl=false"]


class RequestCounter:
    """Reads the request counts of the brokers whose JVMs are *pids*."""

    def __init__(self, pids: Iterable[int], work_dir: Path) -> None:
        self._ports = [agent_port(pid) for pid in pids]
        work_dir.mkdir(parents=True, exist_ok=True)
        self._source = work_dir / "RequestCounts.java"
        self._source.write_text(PROGRAM)

    def read(self) -> dict[str, int]:
        """Requests handled so far, by type, summed over the nodes."""
        java = shutil.which("java") or "java"
        out = _run([java, "-Xmx64m", str(self._source), *map(str, self._ports)])
        return {name: int(count) for name, count in (line.split() for line in out.splitlines())}


def agent_port(pid: int) -> int:
    """The loopback port of JVM *pid*'s JMX agent, started unless it runs (an
    agent runs until its JVM exits, and cannot be started twice)."""
    jcmd = shutil.which("jcmd") or "jcmd"
    status = _run([jcmd, str(pid), "ManagementAgent.status"])
    if found := re.search(r"jmxremote\.port = (\d+)", status):
        return int(found.group(1))
    port = any_free_port()
    options = [f"jmxremote.port={port}", f"jmxremote.rmi.port={port}", "jmxremote.host=127.0.0.1"]
    _run([jcmd, str(pid), "ManagementAgent.start", *options, *NO_SECURITY])
    return port


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def per_message(
    before: Mapping[str, int], after: Mapping[str, int], messages: int
) -> dict[str, float]:
    """Requests of each type per message between two readings, most first
    (``Fetch``, the sum of ``FetchConsumer`` and ``FetchFollower``, left out)."""
    spent = {
        name: (after[name] - before.get(name, 0)) / messages for name in after if name != "Fetch"
    }
    return dict(sorted(((n, v) for n, v in spent.items() if v > 0), key=lambda item: -item[1]))
