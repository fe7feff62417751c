"""The connection: the fields the form declares and the settings validated from them."""
