//! Broker mounted inside an existing axum application.
//!
//! Serves Broker's API under `/broker` next to a route of the application's own:
//!
//! ```sh
//! cargo run --example embed        # then: curl localhost:3000/hello, localhost:3000/broker/health
//! ```
//!
//! Configuration comes from the environment, as for the binary (`BROKER_DB`, `BROKER_NO_AUTH`,
//! ...); the example listens on `PORT` (default 3000).

use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    broker::init_logging();
    let config = broker::Config::from_env()?;
    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000u16);

    // Open the store (no listener): Broker's routes, ready to nest.
    let app = broker::Broker::new(config).open().await?;
    let router = Router::new()
        .route(
            "/hello",
            get(|| async { "hello from the host application" }),
        )
        .nest("/broker", app.router());

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    tracing::info!("example listening on http://{}", listener.local_addr()?);
    // With the peer address, Broker's per-address limits tell clients apart.
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(broker::shutdown::signal())
        .await?;
    // Finish queued commits and release the database.
    app.close().await;
    Ok(())
}
