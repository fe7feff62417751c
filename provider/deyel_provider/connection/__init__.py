"""The connection: the fields it declares, how the form shows them, and the settings validated from them."""
