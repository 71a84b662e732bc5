//! The Kubernetes benchmark's two halves (`scripts/bench-cri`):
//!
//! - `berth-cri node NAME BERTH_RUNTIME`: start a test node (containerd
//!   with its CRI plugin, the `berth` and `runc` handlers, on directories
//!   of its own: [`berth_tests::cri::Node`]), print its CRI socket, and
//!   keep it until stdin is closed; then remove it and all it made.
//! - `berth-cri cycle SOCKET HANDLER host|pod`: one pod's life as kubelet
//!   drives it, with `HANDLER`'s runtime: RunPodSandbox (on the node's
//!   network or the pod network), CreateContainer, StartContainer,
//!   StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use berth_tests::cri::{Client, Node};
use berth_tests::kubelet::{Kubelet, container_config};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args[..] {
        ["node", name, runtime] => {
            let node = Node::start(name, Path::new(runtime));
            println!("{}", node.containerd().address().display());
            // Until whoever started us closes our stdin.
            std::io::stdin().read_to_end(&mut Vec::new())?;
            drop(node);
        }
        ["cycle", socket, handler, network] => {
            let host_network = match network {
                "host" => true,
                "pod" => false,
                _ => bail!("network {network:?}: host or pod"),
            };
            let socket = Path::new(socket);
            let dir = socket.parent().context("a socket in a directory")?;
            let client = Client::connect(socket);
            let kubelet = Kubelet::for_node(&client, handler, dir);
            let pod = kubelet.run_pod(
                &format!("cycle-{}", std::process::id()),
                host_network,
            );
            let config = container_config("app", "exec sleep 1000", |_| ());
            let id = kubelet.start(&pod, config);
            kubelet.stop(&id, 0);
            kubelet.remove(&id);
            kubelet.remove_pod(pod);
        }
        _ => bail!(
            "usage: berth-cri node NAME BERTH_RUNTIME | \
             berth-cri cycle SOCKET HANDLER host|pod"
        ),
    }
    Ok(())
}
