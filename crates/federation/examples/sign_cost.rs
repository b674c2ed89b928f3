//! Cost of one RSA-3072 PSS signature and verification: `rsa` against `ring`.
use std::time::Instant;

use rsa::pkcs8::EncodePrivateKey;
use rsa::sha2::Sha256;

fn main() {
    let key = logbook_federation::identity::generate_private_key().unwrap();
    let public = key.to_public_key();
    let msg = vec![7u8; 1400];
    let n = 50;
    let t = Instant::now();
    let mut sig = Vec::new();
    for _ in 0..n {
        sig = key.pss_sign::<Sha256>(&msg).unwrap();
    }
    println!(
        "rsa sign   {:.3} ms",
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
    let t = Instant::now();
    for _ in 0..n {
        public.pss_verify::<Sha256>(&msg, &sig).unwrap();
    }
    println!(
        "rsa verify {:.3} ms",
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
    let der = key.to_pkcs8_der().unwrap();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(der.as_bytes()).unwrap();
    let rng = ring::rand::SystemRandom::new();
    let mut out = vec![0u8; pair.public().modulus_len()];
    let t = Instant::now();
    for _ in 0..n {
        pair.sign(&ring::signature::RSA_PSS_SHA256, &rng, &msg, &mut out)
            .unwrap();
    }
    println!(
        "ring sign  {:.3} ms",
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
    public.pss_verify::<Sha256>(&msg, &out).unwrap();
    let pk = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PSS_2048_8192_SHA256,
        pair.public().as_ref().to_vec(),
    );
    let t = Instant::now();
    for _ in 0..n * 10 {
        pk.verify(&msg, &out).unwrap();
    }
    println!(
        "ring verify {:.3} ms",
        t.elapsed().as_secs_f64() * 1e3 / (n * 10) as f64
    );
}
