"""The voice-note path beside the text path: hear (download, decode, transcribe, "You said"),
think (the tutor, streamed), speak (each finished sentence to speech at once, joined in order
into one note as the audio arrives) and deliver, with the outbox keeping what is needed to
finish after a crash."""
