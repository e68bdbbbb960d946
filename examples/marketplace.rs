//! Marketplace: inventory that never oversells and never loses a purchase across failover.
//!
//! Run against the playground: `cargo run -p rcluster-examples --bin marketplace -- http://127.0.0.1:7001`
//!
//! Each purchase is one transaction (`POST /v1/txn`): "stock ≥ 1" → decrement the stock (never
//! below 0) and write the order record, otherwise count a refusal — applied atomically as one log
//! entry, so a crash can never leave a sale without its order. A product's stock, orders and
//! refusals share the hash slot of `{product}`, so they live on one shard. Writes use
//! `ack=quorum` (a majority holds each purchase before it is confirmed, so a failover keeps it) and
//! an idempotency key per purchase (a retry after "outcome unknown" returns the first answer).
//! At the end it checks, with linearizable reads: no stock below 0, and per product the orders
//! written = units sold = purchases confirmed.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rcluster_client::{Compare, Consistency, ListOptions, PutOptions, Txn, TxnOp};
use serde_json::json;
use util::{Args, fail, quorum, until_known};

const PRODUCTS: u64 = 4;
const BUYERS: u64 = 6;

#[tokio::main]
async fn main() {
    let args = Args::parse(40);
    let client = args.client();
    let run = std::process::id();
    let stock = args.rounds * BUYERS / PRODUCTS / 2 + 1;
    for p in 0..PRODUCTS {
        let opts = PutOptions {
            write: quorum(format!("{run}-stock-{p}")),
            ..PutOptions::default()
        };
        let key = format!("{{shop{run}-p{p}}}/stock");
        let value = json!(stock);
        until_known(|| client.put(&key, &value, &opts))
            .await
            .unwrap_or_else(|e| fail(&format!("stocking {key}: {e}")));
    }
    println!("ready: {PRODUCTS} products with {stock} units, {BUYERS} buyers");
    let confirmed: Arc<Vec<AtomicU64>> =
        Arc::new((0..PRODUCTS).map(|_| AtomicU64::new(0)).collect());
    let mut buyers = Vec::new();
    for b in 0..BUYERS {
        let (client, confirmed, rounds) = (client.clone(), confirmed.clone(), args.rounds);
        buyers.push(tokio::spawn(async move {
            for n in 0..rounds {
                let p = (b + n) % PRODUCTS;
                let tag = format!("{{shop{run}-p{p}}}");
                let order = format!("b{b}-{n}");
                let buy = Txn::new()
                    .when(Compare::at_least(&format!("{tag}/stock"), 1))
                    .then(TxnOp::incr(&format!("{tag}/stock"), -1).min(0))
                    .then(TxnOp::put(
                        &format!("{tag}/orders/{order}"),
                        json!({"buyer": b}),
                    ))
                    .otherwise(TxnOp::incr(&format!("{tag}/refused"), 1));
                let opts = quorum(format!("{run}-{order}"));
                let done = until_known(|| client.txn(&buy, &opts))
                    .await
                    .unwrap_or_else(|e| fail(&format!("purchase {order}: {e}")));
                if done.succeeded {
                    confirmed[p as usize].fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for b in buyers {
        b.await.unwrap_or_else(|e| fail(&e.to_string()));
    }
    let lin = Some(Consistency::Linearizable);
    let mut sold_total = 0;
    for p in 0..PRODUCTS {
        let tag = format!("{{shop{run}-p{p}}}");
        let stock_key = format!("{tag}/stock");
        let left = until_known(|| client.get(&stock_key, lin))
            .await
            .unwrap_or_else(|e| fail(&e.to_string()))
            .and_then(|r| r.value.as_i64())
            .unwrap_or_else(|| fail("the stock record is gone"));
        let mut orders = 0u64;
        let mut cursor = None;
        loop {
            let opts = ListOptions {
                prefix: Some(format!("{tag}/orders/")),
                start_after: cursor.clone(),
                limit: Some(1000),
                consistency: lin,
            };
            let page = until_known(|| client.list(&opts))
                .await
                .unwrap_or_else(|e| fail(&e.to_string()));
            orders += page.items.len() as u64;
            cursor = page.next;
            if cursor.is_none() {
                break;
            }
        }
        let acked = confirmed[p as usize].load(Ordering::SeqCst);
        let sold = stock as i64 - left;
        println!("product {p}: stock {left}, sold {sold}, orders {orders}, confirmed {acked}");
        if left < 0 || sold != orders as i64 || orders != acked {
            fail(&format!(
                "product {p}: stock {left}, sold {sold}, orders {orders}, confirmed {acked}"
            ));
        }
        sold_total += orders;
    }
    println!("ok: never oversold, order log = stock sold = purchases confirmed ({sold_total})");
}
