# Pure helpers shared by the edgelab NixOS modules and compositions.
#
# Only `builtins` are used, on purpose: these functions must evaluate with
# `nix-instantiate --eval --strict` on a machine that has no nixpkgs, so the
# test suite can check them against the Python planner (edgelab/plan.py).
# The plan is never recomputed here: Python decides node names, addresses,
# links and routes once (`make_plan(...).to_dict()`), Nix only reads it.
let
  inherit (builtins)
    attrNames concatLists concatStringsSep elemAt filter foldl' fromJSON genList
    getAttr hasAttr head length listToAttrs map readFile split toJSON;

  # "10.77.0.5/24" -> { ip = "10.77.0.5"; prefixLength = 24; }
  splitCidr = cidr:
    let parts = filter builtins.isString (split "/" cidr);
    in {
      ip = head parts;
      prefixLength = fromJSON (elemAt parts 1);
    };

  # Numbers on command lines in their shortest form (65, not 65.000000).
  num = x: toJSON x;

  uniq = list: foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ] list;

  # Shell-safe single quoting.
  shQuote = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] s + "'";
in
rec {
  inherit splitCidr shQuote;

  # ---------------------------------------------------------------- reading

  # The plan JSON written by `edgelab` (Plan.to_dict()).
  readPlan = path: fromJSON (readFile path);

  nodeNames = plan: map (n: n.name) plan.nodes;

  node = plan: name:
    let found = filter (n: n.name == name) plan.nodes;
    in if found == [ ] then
      throw "edgelab: node '${name}' is not in plan '${plan.name}' (nodes: ${concatStringsSep ", " (nodeNames plan)})"
    else head found;

  nodesOfRole = plan: role: filter (n: n.role == role) plan.nodes;

  nodesOfGroup = plan: group: filter (n: n.group == group) plan.nodes;

  groups = plan: uniq (map (n: n.group) plan.nodes);

  # { <role> = <number of nodes>; }
  roleCounts = plan:
    listToAttrs (map (r: { name = r; value = length (nodesOfRole plan r); })
      (uniq (map (n: n.role) plan.nodes)));

  # ------------------------------------------------------ role multiplication

  # The node names of N copies of a role, as the planner names them:
  # nodeNamesFor "phone" 3 == [ "phone-1" "phone-2" "phone-3" ].
  nodeNamesFor = prefix: count: genList (i: "${prefix}-${toString (i + 1)}") count;

  # N nodes of one role as an attribute set { phone-1 = f 1; ... }, for
  # compositions that give every node its own configuration (NixOS-Compose
  # `nodes`, or the NixOS test driver). Counts are parameters, not copies.
  multiply = prefix: count: f:
    listToAttrs (genList
      (i: {
        name = "${prefix}-${toString (i + 1)}";
        value = f (i + 1);
      })
      count);

  # NixOS-Compose `rolesDistribution`: one image per group, the hostnames of
  # its nodes as the planner names them. (An integer there would make nxc name
  # them phone1..phoneN, which would not match the plan.)
  rolesDistribution = plan:
    listToAttrs (map (g: { name = g; value = map (n: n.name) (nodesOfGroup plan g); }) (groups plan));

  # ------------------------------------------------------ per-node settings

  # Interface name on the real machine: the plan names interfaces by kind
  # (wlan0, eth0, mesh0); a composition maps them onto what its flavour has
  # (e.g. { wlan0 = "eth1"; } on nxc's vm flavour). Unmapped names are kept.
  realDev = ifmap: ifname: if hasAttr ifname ifmap then getAttr ifname ifmap else ifname;

  # The linkemu CLI arguments for one link (contract in LINKEMU_API.md).
  linkArgs = link: [
    "--rate-mbit" (num link.rate_mbit)
    "--delay-ms" (num link.delay_ms)
    "--jitter-ms" (num link.jitter_ms)
    "--loss-pct" (num link.loss_pct)
  ];

  # Everything one node needs, in a shape the modules consume directly.
  nodeSettings = { plan, name, ifmap ? { } }:
    let
      n = node plan name;
      itfs = map
        (i: i // {
          dev = realDev ifmap i.ifname;
          ip = (splitCidr i.address).ip;
          prefixLength = (splitCidr i.address).prefixLength;
        })
        n.interfaces;
    in {
      inherit (n) name group role index resources;
      interfaces = itfs;
      addresses = map (i: { inherit (i) dev ip prefixLength; }) itfs;
      # One entry per real device: several plan interfaces mapped onto one
      # device (all of a VM's networks on eth1) get impaired once, with the
      # first link's parameters.
      links = uniqBy (l: l.dev) (map (i: { inherit (i) dev network; } // i.link) itfs);
      routes = map (r: r // { dev = realDev ifmap r.dev; plan_dev = r.dev; }) n.routes;
    };

  uniqBy = key: list:
    foldl' (acc: x: if builtins.any (y: key y == key x) acc then acc else acc ++ [ x ]) [ ] list;

  # The commands that impair this node's links, one per device.
  linkCommands = { plan, name, ifmap ? { }, python ? "python3", engine ? "auto" }:
    map
      (l: concatStringsSep " " ([ python "-m" "edgelab.linkemu" "apply" "--dev" l.dev ]
        ++ linkArgs l ++ [ "--engine" engine ]))
      (nodeSettings { inherit plan name ifmap; }).links;

  # `ip` commands adding the plan's addresses and routes (idempotent: replace;
  # the same address twice, as when two mesh interfaces share a device, is harmless).
  # Routes carry `src` = this node's address on the route's interface: on a
  # flavour where the testbed device also holds the flavour's own address
  # (nxc's vm flavour gives eth1 192.168.1.N, nixos-compose
  # nix/flavours/shared/common.nix:78), the kernel would otherwise pick that
  # one, and replies would leave outside the emulated mesh.
  addressCommands = { plan, name, ifmap ? { }, ip ? "ip" }:
    let
      s = nodeSettings { inherit plan name ifmap; };
      srcOf = r:
        let found = filter (i: i.ifname == r.plan_dev) s.interfaces;
        in if found == [ ] then throw "edgelab: route ${r.destination} of node '${name}' leaves by '${r.plan_dev}', which is none of its interfaces"
        else (head found).ip;
    in map (a: "${ip} addr replace ${a.ip}/${toString a.prefixLength} dev ${a.dev}") s.addresses
      # onlink: mesh addresses are /32s, so the next hop is on no subnet.
      ++ map (r: "${ip} route replace ${r.destination} via ${r.via} dev ${r.dev} onlink src ${srcOf r}") s.routes;

  # One shell script for a whole role image: at boot it picks this machine's
  # commands by hostname (NixOS-Compose sets the hostname per node, all nodes
  # of a role share one image). Unknown hostnames fail loudly.
  #
  # A device may be given as `$EDGELAB_DEV` (defaultRouteDev): the device of
  # this machine's IPv4 default route, found at boot. Grid'5000 nodes have
  # predictable interface names that differ between clusters (eno1,
  # enp24s0f0np0...), and their testbed network is the one the default route
  # uses; the vm flavours name theirs (eth1).
  perNodeScript = { plan, names ? nodeNames plan, commandsFor, hostnameCmd ? "hostname", requireDev ? false }:
    let
      branch = name:
        [ "  ${shQuote name})" ] ++ map (c: "    " + c) (commandsFor name) ++ [ "    ;;" ];
      lines = [
        "set -eu"
        "if [ -z \"\${EDGELAB_DEV:-}\" ]; then"
        "  set -- $(ip -o -4 route show default 2>/dev/null || true)"
        "  while [ $# -gt 1 ] && [ \"$1\" != dev ]; do shift; done"
        "  if [ \"\${1:-}\" = dev ]; then EDGELAB_DEV=\${2:-}; else EDGELAB_DEV=; fi"
        "fi"
      ] ++ (if requireDev then [
        "if [ -z \"$EDGELAB_DEV\" ]; then"
        "  echo 'edgelab: this machine has no IPv4 default route, so its testbed device is unknown; give the composition `iface`' >&2"
        "  exit 1"
        "fi"
      ] else [ ]) ++ [
        "node=\"\${EDGELAB_NODE:-$(${hostnameCmd})}\""
        "case \"$node\" in"
      ] ++ concatLists (map branch names) ++ [
        "  *)"
        "    echo \"edgelab: node '$node' is not in plan ${plan.name} (known: ${concatStringsSep " " names})\" >&2"
        "    exit 1"
        "    ;;"
        "esac"
      ];
    in concatStringsSep "\n" lines + "\n";

  # ------------------------------------------------- Wi-Fi access point as a node

  # The plan's Wi-Fi cells (segments with an airtime capacity) and their access
  # point, by the rule edgelab/remote/ap.py ap_plan applies when no dedicated AP
  # device exists: the network's first uplink node; the other uplinks reach the
  # stations through it. A cell on a network with no uplink has no AP here.
  wifiCells = plan: concatLists (map
    (net: map
      (seg: {
        network = net.name;
        segment = seg.index;
        name = "air${toString seg.index}";
        stations = seg.stations;
        capacity = seg.capacity_mbit;
        ap = if net.uplinks == [ ] then
          throw "edgelab: Wi-Fi network '${net.name}' of plan '${plan.name}' has no uplink node to be its access point"
        else head net.uplinks;
        uplinks = filter (u: u != head net.uplinks) net.uplinks;
      })
      (filter (seg: (seg.capacity_mbit or null) != null) net.segments))
    plan.networks);

  # The link tag the remote backends give a node (edgelab/remote/testbed.py link_tag):
  # "el" + the first 6 hex digits of sha256("<testbed>/<node>"); names the AP's IFB.
  linkTag = testbed: name: "el" + builtins.substring 0 6 (builtins.hashString "sha256" "${testbed}/${name}");

  # `ip route replace` commands steering node `name`'s Wi-Fi traffic through
  # each cell's AP, as edgelab/remote/ap.py route_cmds: a station reaches every
  # other member (stations, other uplinks) via the AP; an uplink that is not
  # the AP reaches every station via it. The AP itself gets none.
  cellRouteCommands = { plan, name, ifmap ? { }, ip ? "ip" }:
    let
      forCell = c:
        let
          addr = n: addressOf plan n c.network;
          gw = addr c.ap;
          mine = filter (i: i.network == c.network) (node plan name).interfaces;
          dev = realDev ifmap (head mine).ifname;
          peers = if builtins.elem name c.stations then filter (p: p != name && p != c.ap) (c.stations ++ c.uplinks)
            else if builtins.elem name c.uplinks then c.stations
            else [ ];
        in if mine == [ ] || name == c.ap then [ ]
          else map (p: "${ip} route replace ${addr p}/32 via ${gw} dev ${dev}") peers;
    in concatLists (map forCell (wifiCells plan));

  # The device name that stands for "the default route's device, at boot".
  defaultRouteDev = "$EDGELAB_DEV";

  # Node address by name on a network (for serverAddr, orchestrator address).
  addressOf = plan: name: network:
    let found = filter (i: i.network == network) (node plan name).interfaces;
    in if found == [ ] then throw "edgelab: node '${name}' is not on network '${network}'"
    else (splitCidr (head found).address).ip;

  # /etc/hosts lines for every planned address (first network wins per node).
  hostsEntries = plan:
    listToAttrs (concatLists (map
      (n: if n.interfaces == [ ] then [ ] else [{
        name = (splitCidr (head n.interfaces).address).ip;
        value = [ n.name ];
      }])
      plan.nodes));

  # -------------------------------------------------------------- resources

  # systemd MemoryMax for a node from its planned memory.
  memoryMax = resources: "${toString resources.memory_mib}M";

  # systemd CPUQuota: cpu * speed cores, as a percentage of one core.
  cpuQuota = resources:
    let pct = resources.cpu * resources.speed * 100;
    in "${toString (builtins.floor (pct + 0.5))}%";

  # ------------------------------------------------------- kernel options

  # What the NixOS modules rely on the distribution kernel for, checked at
  # boot (modprobe) rather than rebuilt: nixpkgs' x86_64 kernels build every
  # tristate option they do not answer as a module (autoModules = true,
  # pkgs/os-specific/linux/kernel/generic.nix), so these are all there.
  # `edgelab kernel-check` checks the same options on a device's own
  # kernel config (edgelab/kernelcheck.py).
  requiredKernelModules = {
    # k3s ServiceLB (klipper-lb) matches ports with `-m multiport`.
    serviceLB = [ "xt_multiport" ];
    # Link emulation with netem, and the IFB used for ingress shaping.
    netem = [ "sch_netem" "sch_htb" "ifb" ];
    # BATMAN-adv mesh (in-tree module).
    batman = [ "batman_adv" ];
  };
}
