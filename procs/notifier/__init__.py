"""The notifier process (`process`): its delivery state machine (`delivery`) and senders (`senders`)."""
