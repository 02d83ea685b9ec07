#!/usr/bin/env python3
"""tests/fault/netpart.py: cuts ONE process off from ONE loopback server port, both ways, with
dropped packets (a real partition: no RST, no ICMP, connections hang until timeouts), and heals
the cut. Used by tests/fault/chaos.py for `worker_mysql_partition` and
`worker_broker_partition`.

Mechanism (root, iptables with the `cgroup` match, cgroup v2):
  * every process that may be cut is started inside a cgroup v2 of its own,
    <cgroup2 mount>/<tag>/<name>, by a `sh -c 'echo $$ > cgroup.procs; exec ...'` wrapper, so
    that every socket it ever creates carries that cgroup;
  * cut(pid, cgroup, port), worker -> server: `OUTPUT -p tcp -d 127.0.0.1 --dport PORT -m cgroup
    --path <tag>/<name> -j DROP` (its data, its ACKs, its new SYNs);
  * server -> worker: the cgroup match does not see the receiving socket of loopback input
    (no early demux there), so the process's sockets connected to PORT are read from
    /proc/<pid>/fd + /proc/net/tcp once the OUTPUT rule is in, and `INPUT -p tcp -s 127.0.0.1
    --sport PORT -d 127.0.0.1 -m multiport --dports <its local ports> -j DROP` is added. A new
    connection cannot appear meanwhile: its SYN is dropped;
  * every rule carries the comment `paynotify-chaos <tag>`, matches only the test's own server
    port AND the test's own cgroup or the cut process's own local ports, and never touches the
    loopback traffic of any other process. heal() deletes the rules of one cut; cleanup(tag)
    deletes every rule with that tag and removes the tag's cgroups (on every exit path of
    chaos.py, and in the EXIT trap of scripts/chaos). Tags are `pnchaos-<owner pid>-<hex>`:
    sweep_stale() removes the rules and cgroups of tags whose owner process is gone and whose
    cgroups hold no process (a run killed with SIGKILL).

selftest() proves all of it on this machine in about 2 s before a chaos run relies on it: a
client in a cgroup of the tag loses an established connection both ways (no answer, no
error) and cannot connect (a timeout, not a refusal), another process reaches the same port
meanwhile, and after heal() the stalled request is answered on the same connection.

Command line (used by scripts/chaos):
  netpart.py cleanup TAG     delete TAG's rules and cgroups (exit 0 when nothing is left)
  netpart.py selftest        run the self-test with a tag of its own
  netpart.py sweep           remove the leftovers of dead owners
"""
import os
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time

COMMENT_PREFIX = "paynotify-chaos"
TAG_RE = re.compile(r"^pnchaos-(\d+)-[0-9a-f]+$")


class Unsupported(Exception):
    """The partition mechanism cannot work here (not root, no iptables, no cgroup v2)."""


def _iptables():
    for cand in (shutil.which("iptables"), "/usr/sbin/iptables", "/sbin/iptables"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def _cgroup2_mount():
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "cgroup2":
                return parts[1]
    return None


def _run(argv, check=True):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(shlex.quote, argv))}: exit {r.returncode}: "
                           f"{r.stderr.strip()}")
    return r


def requirements():
    """(iptables path, cgroup2 mount) or raises Unsupported with the reason."""
    if os.geteuid() != 0:
        raise Unsupported("network partitions need root (iptables rules and cgroup v2 "
                          f"membership); running as uid {os.geteuid()}")
    ipt = _iptables()
    if ipt is None:
        raise Unsupported("iptables not found (Debian package `iptables`, installed by "
                          "scripts/lib/deps.sh)")
    mnt = _cgroup2_mount()
    if mnt is None:
        raise Unsupported("no cgroup v2 hierarchy is mounted (looked for type cgroup2 in "
                          "/proc/self/mounts)")
    return ipt, mnt


def new_tag():
    return f"pnchaos-{os.getpid()}-{random.SystemRandom().getrandbits(32):08x}"


def _comment(tag):
    return f"{COMMENT_PREFIX} {tag}"


def _rules_with(ipt, needle):
    """`-A ...` lines of the filter table whose comment is exactly `needle`."""
    out = _run([ipt, "-w", "10", "-S"]).stdout.splitlines()
    want = f'--comment "{needle}"'  # iptables -S quotes it: it contains a space
    return [line for line in out if line.startswith("-A ") and want in line]


def _delete_rule_lines(ipt, lines):
    errors = []
    for line in lines:
        args = shlex.split(line)
        args[0] = "-D"
        r = _run([ipt, "-w", "10", *args], check=False)
        if r.returncode != 0:
            errors.append(f"{line}: {r.stderr.strip()}")
    return errors


def _rmdir_tree(path):
    """Removes the cgroup directories under path, deepest first; False if one is busy."""
    if not os.path.isdir(path):
        return True
    ok = True
    for entry in os.listdir(path):
        sub = os.path.join(path, entry)
        if os.path.isdir(sub) and not os.path.islink(sub):
            ok = _rmdir_tree(sub) and ok
    try:
        os.rmdir(path)
    except OSError:
        ok = False
    return ok


def cleanup(tag):
    """Deletes every rule and cgroup of tag. Returns a list of problems (empty = clean)."""
    if not TAG_RE.match(tag or ""):
        return [f"not a chaos partition tag: {tag!r}"]
    try:
        ipt, mnt = requirements()
    except Unsupported as e:
        return [str(e)]
    problems = _delete_rule_lines(ipt, _rules_with(ipt, _comment(tag)))
    left = _rules_with(ipt, _comment(tag))
    if left:
        problems.append(f"iptables rules of {tag} still present: {left}")
    if not _rmdir_tree(os.path.join(mnt, tag)):
        problems.append(f"cgroup {os.path.join(mnt, tag)} still has processes")
    return problems


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale():
    """Removes rules and cgroups of tags whose owner process has died. Returns the tags."""
    ipt, mnt = requirements()
    tags = set()
    for line in _run([ipt, "-w", "10", "-S"]).stdout.splitlines():
        m = re.search(COMMENT_PREFIX + r" (pnchaos-\d+-[0-9a-f]+)", line)
        if m:
            tags.add(m.group(1))
    for entry in os.listdir(mnt):
        if TAG_RE.match(entry):
            tags.add(entry)
    swept = []
    for tag in sorted(tags):
        if _pid_alive(int(TAG_RE.match(tag).group(1))) or _populated(os.path.join(mnt, tag)):
            continue  # its owner, or one of its workers, still runs
        cleanup(tag)
        swept.append(tag)
    return swept


def _populated(cgroup_dir):
    try:
        with open(os.path.join(cgroup_dir, "cgroup.events")) as f:
            return "populated 1" in f.read()
    except OSError:
        return False


def _sockets_to(pid, port):
    """Local ports of pid's TCP sockets whose remote end is 127.0.0.1:port (any state)."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    want_rem = f"0100007F:{port:04X}"
    local = set()
    with open(f"/proc/{pid}/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            if cols[2] == want_rem and cols[9] in inodes:
                local.add(int(cols[1].split(":")[1], 16))
    return sorted(local)


class Cut:
    def __init__(self, rules, local_ports):
        self.rules = rules            # argument lists after -I/-D
        self.local_ports = local_ports
        self.t0 = time.time()
        self.healed_at = None


class NetPartition:
    """The cgroups and rules of one chaos run (one tag)."""

    def __init__(self, tag=None):
        self.ipt, self.mnt = requirements()
        self.tag = tag or new_tag()
        if not TAG_RE.match(self.tag):
            raise Unsupported(f"bad partition tag {self.tag!r} (want pnchaos-<pid>-<hex>)")
        self.comment = _comment(self.tag)
        self.root = os.path.join(self.mnt, self.tag)
        os.makedirs(self.root, exist_ok=True)
        self.lock = threading.Lock()
        self.n = 0
        self.cuts = []

    # ------------------------------------------------------------ cgroups
    def new_cgroup(self, name=None):
        """A fresh cgroup of the tag: (relative path for `--path`, cgroup.procs file)."""
        with self.lock:
            self.n += 1
            name = name or f"p{self.n}"
        rel = f"{self.tag}/{name}-{self.n}"
        os.makedirs(os.path.join(self.mnt, rel))
        return rel

    def wrap(self, rel, argv):
        """argv started inside cgroup rel: the wrapper joins the cgroup, then execs argv (same
        pid, so Popen.pid is the process's own)."""
        procs = os.path.join(self.mnt, rel, "cgroup.procs")
        return ["/bin/sh", "-c", 'echo $$ >"$0" && exec "$@"', procs, *argv]

    def drop_cgroup(self, rel):
        """Removes an empty cgroup (the process is gone); quiet when it is still busy."""
        try:
            os.rmdir(os.path.join(self.mnt, rel))
        except OSError:
            pass

    # ------------------------------------------------------------ rules
    def _ipt(self, op, rule):
        _run([self.ipt, "-w", "10", op, *rule])

    def cut(self, pid, rel, port):
        """Drops every packet between process pid (in cgroup rel) and 127.0.0.1:port, both
        ways. Returns a Cut for heal()."""
        port = int(port)
        c = Cut([], [])
        with self.lock:
            self.cuts.append(c)
        out = ["OUTPUT", "-p", "tcp", "-d", "127.0.0.1", "--dport", str(port),
               "-m", "cgroup", "--path", rel, "-m", "comment", "--comment", self.comment,
               "-j", "DROP"]
        try:
            self._ipt("-I", out)
            c.rules.append(out)
            c.t0 = time.time()
            c.local_ports = _sockets_to(pid, port)
            for i in range(0, len(c.local_ports), 15):  # multiport takes 15 ports
                chunk = ",".join(str(p) for p in c.local_ports[i:i + 15])
                inp = ["INPUT", "-p", "tcp", "-s", "127.0.0.1", "--sport", str(port),
                       "-d", "127.0.0.1", "-m", "multiport", "--dports", chunk,
                       "-m", "comment", "--comment", self.comment, "-j", "DROP"]
                self._ipt("-I", inp)
                c.rules.append(inp)
        except BaseException:
            self.heal(c)  # never leave half a cut behind
            raise
        return c

    def heal(self, c):
        errors = []
        for rule in reversed(c.rules):
            r = _run([self.ipt, "-w", "10", "-D", *rule], check=False)
            if r.returncode != 0:
                errors.append(r.stderr.strip())
        c.healed_at = time.time()
        with self.lock:
            if c in self.cuts:
                self.cuts.remove(c)
        if errors:
            raise RuntimeError(f"heal: could not delete rules: {errors}")

    def rules_present(self):
        return _rules_with(self.ipt, self.comment)

    def close(self):
        """Heals every cut and removes the tag's rules and cgroups. Returns problems."""
        for c in list(self.cuts):
            try:
                self.heal(c)
            except RuntimeError:
                pass
        return cleanup(self.tag)

    # ------------------------------------------------------------ self-test
    def selftest(self):
        """Proves drop-not-refuse both ways for a cgroup process, that another process is not
        affected, and that the same connection recovers after heal. Raises on failure."""
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        port = srv.getsockname()[1]
        conns = []
        push = threading.Event()

        def echo(c):
            while True:
                try:
                    d = c.recv(64)
                except OSError:
                    return
                if not d:
                    return
                try:
                    c.sendall(d)
                except OSError:
                    return

        def serve():
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return
                conns.append(c)
                threading.Thread(target=echo, args=(c,), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()
        client = (
            "import socket,sys\n"
            "p=int(sys.argv[1]); s=socket.create_connection(('127.0.0.1',p)); "
            "print('connected',flush=True)\n"
            "for line in sys.stdin:\n"
            "    cmd,t=line.split(); t=float(t)\n"
            "    try:\n"
            "        if cmd=='ping': s.settimeout(t); s.sendall(b'x'); s.recv(1)\n"
            "        elif cmd=='wait': s.settimeout(t); s.recv(1)\n"
            "        elif cmd=='recv': s.settimeout(t); s.recv(1)\n"
            "        elif cmd=='connect': socket.create_connection(('127.0.0.1',p),timeout=t).close()\n"
            "        print('ok',flush=True)\n"
            "    except socket.timeout: print('timeout',flush=True)\n"
            "    except OSError as e: print('error',type(e).__name__,flush=True)\n")
        rel = self.new_cgroup("selftest")
        py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        p = subprocess.Popen(self.wrap(rel, [py, "-c", client, str(port)]),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        steps = []

        def cmd(c, want):
            p.stdin.write(c + "\n")
            p.stdin.flush()
            got = p.stdout.readline().strip()
            steps.append(f"{c} -> {got}")
            if got != want:
                raise RuntimeError(f"partition self-test: `{c}` gave {got!r}, want {want!r} "
                                   f"(steps: {steps})")

        cut = None
        try:
            line = p.stdout.readline().strip()
            if line != "connected":
                raise RuntimeError(f"partition self-test client did not connect: {line!r}")
            cmd("ping 2", "ok")
            deadline = time.time() + 2
            while len(conns) < 1 and time.time() < deadline:
                time.sleep(0.01)
            cut = self.cut(p.pid, rel, port)
            if len(cut.local_ports) != 1:
                raise RuntimeError(f"partition self-test: found local ports {cut.local_ports}, "
                                   "want exactly one")
            # server -> client dropped: a byte the server pushes does not arrive
            conns[0].sendall(b"s")
            cmd("recv 0.5", "timeout")
            # client -> server dropped: no answer, no error
            cmd("ping 0.5", "timeout")
            # a new connection times out (dropped SYN), it is not refused
            cmd("connect 0.5", "timeout")
            # everybody else still reaches the port
            with socket.create_connection(("127.0.0.1", port), timeout=2) as o:
                o.sendall(b"y")
                o.settimeout(2)
                if o.recv(1) != b"y":
                    raise RuntimeError("partition self-test: an outside connection was affected")
            self.heal(cut)
            cut = None
            # the same connection recovers by TCP retransmission: "s" then the "x" echo
            cmd("wait 10", "ok")
            cmd("wait 10", "ok")
            cmd("connect 2", "ok")
        finally:
            if cut is not None:
                self.heal(cut)
            try:
                p.stdin.close()
            except OSError:
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            srv.close()
            for c in conns:
                c.close()
            self.drop_cgroup(rel)
        return steps


def main(argv):
    if len(argv) >= 2 and argv[0] == "cleanup":
        problems = cleanup(argv[1])
        for pr in problems:
            print(f"netpart: {pr}", file=sys.stderr)
        return 1 if problems else 0
    if argv[:1] == ["sweep"]:
        for tag in sweep_stale():
            print(f"netpart: removed the leftovers of {tag}")
        return 0
    if argv[:1] == ["selftest"]:
        try:
            np = NetPartition()
        except Unsupported as e:
            print(f"netpart: UNSUPPORTED: {e}", file=sys.stderr)
            return 1
        try:
            t0 = time.time()
            steps = np.selftest()
            print(f"netpart: self-test passed in {time.time() - t0:.1f}s: {'; '.join(steps)}")
        finally:
            problems = np.close()
        for pr in problems:
            print(f"netpart: {pr}", file=sys.stderr)
        return 1 if problems else 0
    print(__doc__.split("Command line")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
