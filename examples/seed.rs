//! The original Broker's library entry point, unchanged: serves on `PORT` with the CORS origin
//! given, in open mode with its database in `./tmp` (an authentication variable such as
//! `BROKER_JWT_SECRET` turns authentication on; `BROKER_DB` moves the database).
//!
//! ```sh
//! make                     # PORT=8080 cargo run --release --example seed
//! make client              # the two-window demo against it
//! ```

#[tokio::main]
async fn main() -> std::result::Result<(), std::io::Error> {
    broker::broker_run("*".to_owned()).await
}
