//! Which partition a keyed message belongs to, computed exactly as the broker does.
//!
//! The broker routes a keyed message to `crc32c(key) % partitions` (pinned in weir-core, so
//! clients in every language agree). The producer computes the same function so it can put
//! each message into its partition's batch itself: then every batch goes to one partition and
//! each message's confirm can name its exact offset. CRC32C (Castagnoli) is written out here
//! with a table built at compile time, because this crate keeps its dependency list short and
//! the function is a dozen lines.

/// The reflected Castagnoli polynomial.
const POLYNOMIAL: u32 = 0x82F6_3B78;

/// One entry per byte value: the CRC of that byte alone, without pre- and post-inversion.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut crc = index as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLYNOMIAL
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[index] = crc;
        index += 1;
    }
    table
};

/// CRC32C of `bytes`, as `crc32c::crc32c` computes it.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc = TABLE[usize::from((crc as u8) ^ byte)] ^ (crc >> 8);
    }
    !crc
}

/// The partition the broker gives a message with this key in a topic of `partitions`
/// partitions (0 is treated as 1).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    crc32c(key) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_published_check_values() {
        // The standard check value of CRC-32C, and two from RFC 3720 (iSCSI) appendix B.4.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn a_key_always_lands_in_the_same_partition() {
        assert_eq!(partition_for_key(b"order-1", 1), 0);
        assert_eq!(partition_for_key(b"order-1", 0), 0);
        assert_eq!(
            partition_for_key(b"order-1", 7),
            partition_for_key(b"order-1", 7)
        );
        let spread: std::collections::BTreeSet<u32> = (0..100)
            .map(|key| partition_for_key(format!("key-{key}").as_bytes(), 4))
            .collect();
        assert_eq!(spread.len(), 4);
    }
}
