"""Finance: the points liability as finance reads it (roll-forward, aging, issuance cohorts)."""
