# The edgelab Python package, built from this repository.
# Call with python3Packages.callPackage; `edgelab-app` in flake.nix is its
# toPythonApplication form (the `edgelab` command).
#
# What nixpkgs 23.11 lacks or has in another version:
# - execo (edgelab.results imports execo_engine at import time) is not in
#   nixpkgs; nur-kapack packages it, and nxc's flake already depends on
#   nur-kapack (its `kapack` input; nixos-compose flake.nix uses
#   `kapack.packages.${system}.execo`), so flake.nix passes that one.
# - paho-mqtt is 1.6 in 23.11; edgelab uses the 2.x API
#   (mqtt.CallbackAPIVersion), so 2.1.0 from PyPI is built here when the
#   given one is older.
# - NetfilterQueue (the linkemu fallback's delayer) is not in nixpkgs; NixOS
#   kernels have sch_netem, so the modules use the netem engine and the
#   fallback is not packaged here (nor its C delayer, edgelab/linkemu/nfq_delayer.c,
#   which scripts/bootstrap builds on Debian).
{ lib
, buildPythonPackage
, fetchPypi
, hatchling
, setuptools
, pyyaml
, click
, rich
, pandas
, numpy
, matplotlib
, pyroute2
, prometheus-client
, paho-mqtt
, requests
, pillow
, opencv4
, waitress
, pythonRelaxDepsHook
, execo ? null
, src ? ../.
}:

let
  paho2 =
    if lib.versionAtLeast paho-mqtt.version "2" then paho-mqtt
    else paho-mqtt.overridePythonAttrs (old: rec {
      version = "2.1.0";
      src = fetchPypi {
        pname = "paho_mqtt";
        inherit version;
        hash = "sha256-EtbnUR1BN1VaP26hZ66EavLHNXsQvG+k98OWj8FyODQ=";
      };
      format = "pyproject";
      nativeBuildInputs = [ hatchling ];
      # Its tests need a broker; edgelab's own tests exercise it.
      doCheck = false;
      pythonImportsCheck = [ "paho.mqtt.client" ];
    });
in
assert lib.assertMsg (execo != null)
  "pkgs/edgelab.nix: edgelab needs execo (edgelab.results imports execo_engine); pass `execo = kapack.packages.\${system}.execo` (nur-kapack, an input of nixos-compose), as flake.nix does.";
buildPythonPackage {
  pname = "edgelab";
  version = "0.1.0";
  format = "pyproject";

  # Only what the wheel and the shipped experiments need, so editing docs or
  # Nix files does not rebuild it.
  src = lib.cleanSourceWith {
    inherit src;
    filter = path: type:
      let
        rel = lib.removePrefix (toString src + "/") (toString path);
        under = d: rel == d || lib.hasPrefix "${d}/" rel;
      in
      rel == "pyproject.toml" || under "edgelab" || under "analysis"
      || under "experiments" || under "topologies";
  };

  nativeBuildInputs = [ setuptools pythonRelaxDepsHook ];
  # pyproject names the PyPI wheel (opencv-python-headless); nixpkgs' opencv4
  # provides the same cv2 module under another distribution name.
  pythonRemoveDeps = [ "opencv-python-headless" ];

  # waitress serves the phone workload (edgelab/services/phone/server.py); the
  # options it uses (threads, connection_limit, channel_timeout, max_request_*)
  # and strict Content-Length/chunk parsing exist since waitress 2.1.1; nixpkgs
  # 23.11 should carry 2.1.2 (not checked against the pinned tree: its package
  # set is not on the development machine). requirements.txt pins 3.0.2.
  propagatedBuildInputs = [
    pyyaml click rich pandas numpy matplotlib pyroute2 prometheus-client
    paho2 requests pillow opencv4 execo waitress
  ];

  # The experiments are scripts, not a package: ship them (and the example
  # topologies) so `python $out/share/edgelab/experiments/wifi_scaling.py`
  # runs on a node.
  postInstall = ''
    mkdir -p $out/share/edgelab
    cp -r experiments topologies $out/share/edgelab/
  '';

  # The test suite needs root, namespaces and other helpers' services; it runs
  # in CI outside Nix. Importing the package is the check here.
  doCheck = false;
  pythonImportsCheck = [ "edgelab" "edgelab.plan" "edgelab.topology" "edgelab.results" "edgelab.services.power.meter"
    "edgelab.services.phone.server" "edgelab.services.beaglepaas" ];

  meta = {
    description = "Reproducible testbeds for low-cost edge computing research";
    license = lib.licenses.mit;
    mainProgram = "edgelab";
  };
}
