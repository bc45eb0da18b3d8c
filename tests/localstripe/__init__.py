"""localstripe, the Stripe emulator the payment adapter's tests run against."""
