//! A throwaway `bitcoind -regtest` node for tests and local trials: its own data
//! directory and RPC port, no peers, stopped and deleted when dropped; with the two
//! things a regtest user needs besides the [`Chain`](cohort_common::chain::Chain)
//! calls: mining to a script, and paying from coinbases held by a single key.
//!
//! The binary is `$COHORT_BITCOIND`, else `bitcoind` on `PATH` ([`find_bitcoind`];
//! `scripts/bitcoind.sh` builds the one CI uses). A test that needs it and finds none is
//! skipped with a message, unless `CI` is set: then it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bitcoin::absolute::LockTime;
use bitcoin::key::TapTweak as _;
use bitcoin::secp256k1::{Message, SECP256K1};
use bitcoin::transaction::Version;
use bitcoin::{Address, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut};
use cohort_common::keys::Keypair;
use cohort_common::scripts::{key_spend_sighash, key_spend_witness};
use serde_json::json;

use crate::{BitcoindChain, BitcoindConfig, RpcAuth, RpcError};

/// The `bitcoind` to run: `$COHORT_BITCOIND`, else `bitcoind` on `PATH`. `None` (after
/// saying so on stderr) when there is none and `CI` is unset; with `CI` set, a missing
/// binary panics, so a CI run can never skip the node's tests silently.
pub fn find_bitcoind() -> Option<PathBuf> {
    let found = match std::env::var_os("COHORT_BITCOIND") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths).map(|d| d.join("bitcoind")).find(|p| p.is_file())
        }),
    };
    if found.is_none() {
        let why = "no bitcoind: set COHORT_BITCOIND or put bitcoind on PATH (scripts/bitcoind.sh builds one)";
        assert!(std::env::var_os("CI").is_none(), "CI is set and {why}");
        eprintln!("skipping: {why}");
    }
    found
}

/// A `bitcoind -regtest` process with its own RPC port and data directory.
#[derive(Debug)]
pub struct RegtestNode {
    bin: PathBuf,
    datadir: PathBuf,
    rpc_port: u16,
    child: Option<Child>,
}

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// A TCP port free on loopback right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl RegtestNode {
    /// Starts `bin` on a fresh data directory under the system's temporary directory.
    pub fn start(bin: &Path) -> std::io::Result<RegtestNode> {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let datadir =
            std::env::temp_dir().join(format!("cohort-regtest-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&datadir);
        std::fs::create_dir_all(&datadir)?;
        let mut node =
            RegtestNode { bin: bin.to_path_buf(), datadir, rpc_port: free_port()?, child: None };
        node.spawn()?;
        Ok(node)
    }

    /// Starts the process again on the same data directory (after [`RegtestNode::stop`]).
    pub fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new(&self.bin)
            .arg("-regtest")
            .arg(format!("-datadir={}", self.datadir.display()))
            .arg(format!("-rpcport={}", self.rpc_port))
            .args(["-rpcbind=127.0.0.1", "-rpcallowip=127.0.0.1", "-server=1", "-listen=0"])
            .args(["-connect=0", "-dnsseed=0", "-fixedseeds=0", "-discover=0", "-natpmp=0"])
            .args(["-printtoconsole=0", "-txindex=0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// Its data directory.
    pub fn datadir(&self) -> &Path {
        &self.datadir
    }

    /// Its RPC URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rpc_port)
    }

    /// A client configuration for it (cookie authentication), expecting `network`.
    pub fn config(&self, network: Network) -> BitcoindConfig {
        let auth = RpcAuth::cookie_in(&self.datadir, Network::Regtest);
        let mut config = BitcoindConfig::new(self.url(), auth, network);
        // Start-up on a busy machine takes a while.
        config.retry.give_up_after = Duration::from_secs(120);
        config
    }

    /// A checked connection to it (waits for it to answer).
    pub fn chain(&self) -> Result<BitcoindChain, RpcError> {
        BitcoindChain::connect(self.config(Network::Regtest))
    }

    /// Asks the node to stop and waits (up to a minute, then kills it) for it to end.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let chain = BitcoindChain::unchecked(self.config(Network::Regtest));
        let _ = chain.rpc().call::<serde_json::Value>("stop", &[]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for RegtestNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.datadir);
    }
}

/// Mines `blocks` blocks paying their coinbases to `script` (`generatetoaddress`).
pub fn mine(chain: &BitcoindChain, blocks: u32, script: &ScriptBuf) -> Result<(), RpcError> {
    let address = Address::from_script(script, Network::Regtest).map_err(|e| RpcError::Decode {
        method: "generatetoaddress".into(),
        detail: format!("{script}: {e}"),
    })?;
    let params = [json!(blocks), json!(address.to_string())];
    let _: Vec<bitcoin::BlockHash> = chain.rpc().call("generatetoaddress", &params)?;
    Ok(())
}

/// A version-2 transaction spending `inputs` (key-path P2TR outputs of `signer`, as
/// [`p2tr_single`](cohort_common::exit::p2tr_single) makes them) to `outputs`, signed.
pub fn spend(
    inputs: &[(OutPoint, TxOut)],
    outputs: Vec<TxOut>,
    signer: &Keypair,
) -> Result<Transaction, cohort_common::scripts::ScriptError> {
    let mut tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: inputs
            .iter()
            .map(|(o, _)| TxIn { previous_output: *o, sequence: Sequence::MAX, ..TxIn::default() })
            .collect(),
        output: outputs,
    };
    let prevouts: Vec<TxOut> = inputs.iter().map(|(_, t)| t.clone()).collect();
    let keypair = bitcoin::secp256k1::Keypair::from_secret_key(SECP256K1, &signer.secret);
    let tweaked = keypair.tap_tweak(SECP256K1, None).to_keypair();
    for i in 0..inputs.len() {
        let sighash = key_spend_sighash(&tx, i, &prevouts)?;
        let sig = SECP256K1.sign_schnorr(&Message::from_digest(sighash), &tweaked);
        tx.input[i].witness = key_spend_witness(&sig);
    }
    Ok(tx)
}
