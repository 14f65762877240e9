//! Cluster mode: Broker nodes on a 3-node NATS JetStream cluster (tests/common/nats.rs).

mod common;

use common::nats::NatsCluster;

#[test]
fn harness_cluster_survives_a_killed_node_and_restarts_it() {
    let mut cluster = NatsCluster::start();
    assert_eq!(cluster.len(), 3);
    assert_eq!(cluster.urls().split(',').count(), 3);
    cluster.kill(1);
    assert!(!cluster.is_running(1));
    cluster.wait_healthy(0);
    cluster.restart(1);
    assert!(cluster.is_running(1));
}
