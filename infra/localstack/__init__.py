"""The local stack: moto, the provider sandboxes and an HttpApi stand-in on 127.0.0.1 (`make run`)."""
