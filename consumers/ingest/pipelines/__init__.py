"""One module per topic: the contract, its decoder, and how its events become rows."""
