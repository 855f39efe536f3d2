"""The ledger document kinds more than one stage reads: the shadow stage writes them, retire and the board
read them. Defined here, at the layer all of them import, so a kind is spelled once."""

VERDICT_KIND = "shadow-verdict"  # key: job id; the verdict retire's gate reads
OBSERVATION_KIND = "shadow-observation"  # one pair of side runs of a shadow session
LIVE_KIND = "shadow-live"  # a live (recorded, not re-run) shadow setup
