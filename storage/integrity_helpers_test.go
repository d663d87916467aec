package storage

import "hash/crc32"

// salvageOf is what the last Open salvaged (nil: nothing was moved aside).
func salvageOf(db *DB) *SalvageStats { return db.Stats().Salvage }

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
