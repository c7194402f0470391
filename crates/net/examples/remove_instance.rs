//! Removes what a dead sandbar instance left of its network (namespaces under
//! its state dir, veths with its prefix, its nftables table):
//! `remove_instance <instance> <state_dir>`.

use sandbar_net::{NetConfig, Network};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("sandbar_net=info")
        .init();
    let mut args = std::env::args().skip(1);
    let (Some(instance), Some(state_dir)) = (args.next(), args.next()) else {
        return Err("usage: remove_instance <instance> <state_dir>".into());
    };
    let config = NetConfig {
        instance,
        // Cleanup needs no addresses; any valid range will do.
        subnet: "10.255.255.0/30".parse()?,
        state_dir: state_dir.into(),
        pool_size: 0,
        dns_upstream: Vec::new(),
        open_ranges: Vec::new(),
        public_ranges: Vec::new(),
    };
    Network::remove_instance(&config).await?;
    Ok(())
}
