package storage

// salvageOf is what the last Open salvaged (nil: nothing was moved aside).
func salvageOf(db *DB) *SalvageStats { return db.Stats().Salvage }
