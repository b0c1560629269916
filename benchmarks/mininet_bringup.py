"""Time Mininet bringing up N hosts on one Linux bridge (run by bringup.py with the
system python3, which has Debian's mininet). Prints one JSON line.

No link shaping (TCLink needs sch_netem) and no controller: the closest
Mininet equivalent of N stations on an access point's bridge. Names carry
the 'lb' prefix (switch lbs1, hosts lbh<i>) so they cannot clash with others'.
"""

import json
import sys
import time

from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.nodelib import LinuxBridge
from mininet.topo import Topo


class Star(Topo):
    def build(self, n):
        sw = self.addSwitch("lbs1")
        for i in range(1, n + 1):
            self.addLink(self.addHost(f"lbh{i}"), sw)


def main(n: int) -> None:
    setLogLevel("error")
    t0 = time.monotonic()
    net = Mininet(topo=Star(n=n), switch=LinuxBridge, controller=None, autoSetMacs=True)
    net.start()
    t1 = time.monotonic()
    ok = "1 received" in net.hosts[0].cmd(f"ping -c1 -W1 {net.hosts[-1].IP()}")
    t2 = time.monotonic()
    net.stop()
    t3 = time.monotonic()
    print(json.dumps({"n": n, "up_s": t1 - t0, "down_s": t3 - t2, "ping_ok": ok}))


if __name__ == "__main__":
    main(int(sys.argv[1]))
