# All edgelab NixOS modules; every option lives under `edgelab.*` and does
# nothing until enabled.
{
  imports = [
    ./common.nix
    ./netem.nix
    ./k3s.nix
    ./phone.nix
    ./beaglepaas.nix
    ./power-meter.nix
    ./dfs.nix
  ];
}
