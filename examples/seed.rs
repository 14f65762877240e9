//! The original Broker's library entry point, unchanged: serves on `PORT` with the CORS origin
//! given, everything else from the environment.
//!
//! ```sh
//! PORT=8080 cargo run --example seed
//! ```

#[tokio::main]
async fn main() -> std::result::Result<(), std::io::Error> {
    broker::broker_run("*".to_owned()).await
}
