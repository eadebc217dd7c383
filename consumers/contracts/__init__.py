"""The wire contracts: what producers send on each topic, free of any database code.

One module per topic; ``base`` holds the building blocks (constrained aliases, exact decimal
checks, the JSON Schema export). Producers in Python import these types; producers in other
languages read the JSON Schema that ``cie contracts`` prints.
"""
