//! Replicas' shares of the accounts (`--shard=i/n`), and the stable hash of an account name
//! that shard ownership and schedule phases are both drawn from.

use std::fmt;
use std::str::FromStr;

// The hashes below decide phases and shard ownership. They are FNV-1a followed by the
// MurmurHash3 finalizer (FNV alone mixes its high bits poorly for short names), with fixed
// constants: the same name gets the same phase and shard on every replica and every release.
// Changing them reshuffles every deployment's schedule and shards.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// The salt of schedule phases.
pub(crate) const PHASE_SALT: u64 = 0;
/// Shards use an independent hash: were shard and phase correlated, each replica would probe
/// its accounts in one bunch of the interval.
const SHARD_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// The stable hash of an account name under `salt`.
pub(crate) fn stable_hash(name: &str, salt: u64) -> u64 {
    let mut h = FNV_OFFSET ^ salt;
    for byte in name.bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Whether the replica running as `shard` probes `account` (`--shard=i/n`). Each account is
/// owned by exactly one of the `n` shards, decided by a stable hash of its name alone, so
/// replicas agree without talking to each other and no mailbox is logged in to twice. Adding
/// or removing an account never moves another one.
pub fn owns(account: &str, shard: Shard) -> bool {
    let count = u128::from(shard.count.max(1));
    let owner = (u128::from(stable_hash(account, SHARD_SALT)) * count) >> 64;
    owner == u128::from(shard.index)
}

/// One replica's share of the accounts: `index` of `count`, 0-based, written `index/count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// A single replica owning every account.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };
}

impl Default for Shard {
    fn default() -> Self {
        Shard::WHOLE
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Why a `--shard` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("shard {0:?} is not of the form INDEX/COUNT, e.g. 0/3")]
    Format(String),
    #[error("shard index {0:?} is not a whole number")]
    Index(String),
    #[error("shard count {0:?} is not a whole number")]
    Count(String),
    #[error("shard count must be at least 1")]
    ZeroCount,
    #[error("shard index {index} is out of range: with {count} shards it is 0 to {}", count - 1)]
    OutOfRange { index: u32, count: u32 },
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (index, count) = s
            .split_once('/')
            .ok_or_else(|| ShardError::Format(s.to_string()))?;
        let number = |text: &str| {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            text.parse::<u32>().ok()
        };
        let index = number(index).ok_or_else(|| ShardError::Index(index.to_string()))?;
        let count = number(count).ok_or_else(|| ShardError::Count(count.to_string()))?;
        if count == 0 {
            return Err(ShardError::ZeroCount);
        }
        if index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }
}
