"""What the tests share: the stack and its fixtures' helpers, builders, `cie` processes, private servers."""
