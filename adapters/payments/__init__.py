"""Payment gateways: Stripe (``adapters.payments.stripe``, the only module that imports the
stripe package) and the stand-in used when no Stripe key is configured
(``adapters.payments.unconfigured``). Import the module you need: this package imports
neither, so a store without Stripe never loads it."""
